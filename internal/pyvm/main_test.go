//go:build vm

package pyvm

import (
	"testing"

	"github.com/cgpool/cgpool/internal/kerneltest"
)

func TestMain(m *testing.M) { kerneltest.Main(m) }
