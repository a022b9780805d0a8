package cgroup_test

import (
	"testing"

	"github.com/cgpool/cgpool/internal/kerneltest"
)

func TestMain(m *testing.M) { kerneltest.Main(m) }
