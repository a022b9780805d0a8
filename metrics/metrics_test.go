package metrics

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/pool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden")

func TestMain(m *testing.M) { kerneltest.Main(m) }

// scrape GETs /metrics and parses it with the client library's own text
// parser: what a Prometheus server would accept.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the endpoint's text does not parse: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want (a counter, a gauge, or a histogram's count), and whether
// there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

type future struct{ done chan *pool.Outcome }

func submit(t *testing.T, p *pool.Pool, spec pool.Spec) (*pool.Task, *future) {
	t.Helper()
	f := &future{done: make(chan *pool.Outcome, 1)}
	task, err := p.Submit(context.Background(), spec, func(e pool.Event) {
		if e.Outcome != nil {
			f.done <- e.Outcome
		}
	})
	if err != nil {
		t.Fatalf("Submit(%q): %v", spec.Argv, err)
	}
	return task, f
}

func (f *future) wait(t *testing.T) *pool.Outcome {
	t.Helper()
	select {
	case o := <-f.done:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("no outcome within 30s")
		return nil
	}
}

// TestEndpoint: the endpoint's text parses, carries the named metrics, and
// its values move as tasks run (issue 12, acceptance 3). Runs wherever a
// writable cgroup v2 exists; per-slot memory is checked where the memory
// controller is (the VM).
func TestEndpoint(t *testing.T) {
	root := kerneltest.NewRoot(t)
	sh, err := lookPath("sh")
	if err != nil {
		kerneltest.Skipf(t, "%v", err)
	}
	m := New()
	one := 1
	cfg := pool.Config{Name: "m", Kind: pool.KindExec, MaxWorkers: 1, MinWorkers: &one, Observer: m}
	sup, err := pool.NewSupervisor(root, []pool.Config{cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sup.Shutdown(context.Background(), pool.ShutdownOptions{Wait: true, CancelFutures: true}); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	p, _ := sup.Pool("m")
	srv := httptest.NewServer(m.Handler(nil))
	defer srv.Close()

	// Before Watch: only the histograms (no samples yet) and the process
	// and Go collectors.
	fams := scrape(t, srv.URL)
	for _, name := range []string{"process_resident_memory_bytes", "go_goroutines"} {
		if v, ok := value(fams, name, nil); !ok || v <= 0 {
			t.Errorf("%s = %v, %v; want a positive value (the supervisor's own)", name, v, ok)
		}
	}
	if _, ok := fams["cgpool_tasks_total"]; ok {
		t.Errorf("cgpool_tasks_total before Watch: want none")
	}
	m.Watch(sup)
	fams = scrape(t, srv.URL)
	for _, want := range []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"cgpool_tasks_total", map[string]string{"pool": "m", "outcome": "result", "reason": ""}, 0},
		{"cgpool_tasks_total", map[string]string{"pool": "m", "outcome": "process_error", "reason": "oom"}, 0},
		{"cgpool_max_workers", map[string]string{"pool": "m"}, 1},
		{"cgpool_workers", map[string]string{"pool": "m", "state": "busy"}, 0},
	} {
		if v, ok := value(fams, want.name, want.labels); !ok || v != want.v {
			t.Errorf("%s%v = %v, %v before any task; want %v", want.name, want.labels, v, ok, want.v)
		}
	}

	// Tasks: two results (exit 0 and 3), one that leaves a child behind
	// (killed with its slot), a blocker held while three wait in the
	// queue at two priorities, which are then cancelled, and a timeout.
	for _, argv := range [][]string{{sh, "-c", "exit 0"}, {sh, "-c", "exit 3"}, {sh, "-c", "sleep 100 & echo left"}} {
		_, f := submit(t, p, pool.Spec{Argv: argv})
		if o := f.wait(t); o.Kind != pool.Result {
			t.Fatalf("%q: %v", argv, o)
		}
	}
	_, blocker := submit(t, p, pool.Spec{Argv: []string{sh, "-c", "echo up; sleep 100"}, Timeout: 3 * time.Second})
	var queued []*pool.Task
	for _, prio := range []int{3, 3, 0} {
		task, _ := submit(t, p, pool.Spec{Argv: []string{sh, "-c", "exit 0"}, Priority: prio})
		queued = append(queued, task)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams = scrape(t, srv.URL)
		busy, _ := value(fams, "cgpool_workers", map[string]string{"pool": "m", "state": "busy"})
		q3, _ := value(fams, "cgpool_queued_tasks", map[string]string{"pool": "m", "priority": "3"})
		q0, _ := value(fams, "cgpool_queued_tasks", map[string]string{"pool": "m", "priority": "0"})
		if busy == 1 && q3 == 2 && q0 == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a blocker running and three queued: busy %v, queued at 3: %v, at 0: %v; want 1, 2, 1", busy, q3, q0)
		}
		time.Sleep(20 * time.Millisecond) // polling a scrape, with a deadline
	}
	if root := root.Controllers(); slices.Contains(root, "memory") {
		if v, ok := value(fams, "cgpool_slot_memory_bytes", map[string]string{"pool": "m"}); !ok || v <= 0 {
			t.Errorf("cgpool_slot_memory_bytes of the busy slot = %v, %v; want its memory.current", v, ok)
		}
		if v, ok := value(fams, "cgpool_slot_memory_peak_bytes", map[string]string{"pool": "m"}); !ok || v <= 0 {
			t.Errorf("cgpool_slot_memory_peak_bytes of the busy slot = %v, %v; want its memory.peak", v, ok)
		}
	} else if _, ok := fams["cgpool_slot_memory_bytes"]; ok {
		t.Errorf("cgpool_slot_memory_bytes exported without the memory controller (controllers %q): absence is not zero", root)
	}
	for _, task := range queued {
		if ok, state := p.Cancel(task.ID(), false); !ok {
			t.Fatalf("cancel of a queued task: %v %s", ok, state)
		}
	}
	if o := blocker.wait(t); o.Kind != pool.TimedOut {
		t.Fatalf("blocker: %v, want a timeout", o)
	}

	fams = scrape(t, srv.URL)
	for _, want := range []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"cgpool_tasks_total", map[string]string{"pool": "m", "outcome": "result", "reason": ""}, 3},
		{"cgpool_tasks_total", map[string]string{"pool": "m", "outcome": "timeout", "reason": ""}, 1},
		{"cgpool_tasks_total", map[string]string{"pool": "m", "outcome": "cancelled", "reason": ""}, 3},
		{"cgpool_tasks_received_total", map[string]string{"pool": "m"}, 7},
		{"cgpool_tasks_started_total", map[string]string{"pool": "m"}, 4},
		{"cgpool_leftover_processes_killed_total", map[string]string{"pool": "m"}, 1},
		{"cgpool_task_duration_seconds", map[string]string{"pool": "m", "outcome": "result"}, 3},
		{"cgpool_task_duration_seconds", map[string]string{"pool": "m", "outcome": "timeout"}, 1},
		{"cgpool_spawn_duration_seconds", map[string]string{"pool": "m"}, 4},
	} {
		if v, ok := value(fams, want.name, want.labels); !ok || v != want.v {
			t.Errorf("%s%v = %v, %v; want %v", want.name, want.labels, v, ok, want.v)
		}
	}
	if v, ok := value(fams, "cgpool_kill_to_empty_seconds", map[string]string{"pool": "m"}); !ok || v < 1 {
		t.Errorf("cgpool_kill_to_empty_seconds count = %v, %v; want at least the left-behind child's kill", v, ok)
	}
	if _, ok := fams["cgpool_queued_tasks"]; ok {
		for _, mm := range fams["cgpool_queued_tasks"].GetMetric() {
			t.Errorf("cgpool_queued_tasks with nothing queued: %v", mm)
		}
	}
	// Prometheus' own naming rules (units, _total on counters, base units),
	// as promtool check metrics applies them.
	var ours []*dto.MetricFamily
	for name, f := range fams {
		if strings.HasPrefix(name, "cgpool_") {
			ours = append(ours, f)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	if h := fams["cgpool_task_duration_seconds"]; h != nil {
		for _, mm := range h.GetMetric() {
			if labels := fmt.Sprint(mm.GetLabel()); strings.Contains(labels, "timeout") && mm.GetHistogram().GetSampleSum() < 3 {
				t.Errorf("the timed-out task ran %vs in the histogram, want at least its 3s timeout", mm.GetHistogram().GetSampleSum())
			}
		}
	}
}

// TestGolden: the names, help texts, types and labels of cgpool's own
// metrics, as a scraper's users see them; go test -update rewrites it.
func TestGolden(t *testing.T) {
	m := New()
	ch := make(chan *prometheus.Desc, 64)
	for _, c := range []prometheus.Collector{m.taskRun, m.spawn, m.empty, (*stats)(m)} {
		c.Describe(ch)
	}
	close(ch)
	var lines []string
	for d := range ch {
		lines = append(lines, d.String())
	}
	sort.Strings(lines)
	got := strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("metric descriptions changed (go test -update ./metrics rewrites %s):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
	for _, l := range lines {
		name := strings.SplitN(l, `"`, 3)[1]
		if !model.IsValidLegacyMetricName(name) || !strings.HasPrefix(name, "cgpool_") {
			t.Errorf("metric name %q: want cgpool_ and Prometheus' legacy charset", name)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		remote bool
		want   string // "" : refused
	}{
		{"9464", false, "127.0.0.1:9464"},
		{"127.0.0.1:9464", false, "127.0.0.1:9464"},
		{"[::1]:9464", false, "[::1]:9464"},
		{"localhost:9464", false, "localhost:9464"},
		{":9464", false, ""},
		{"0.0.0.0:9464", false, ""},
		{"192.0.2.7:9464", false, ""},
		{"0.0.0.0:9464", true, "0.0.0.0:9464"},
		{":9464", true, ":9464"},
		{"127.0.0.1:notaport", false, ""},
		{"", false, ""},
	} {
		got, err := CheckAddr(tc.addr, tc.remote)
		if tc.want == "" {
			if err == nil {
				t.Errorf("CheckAddr(%q, %v) = %q, want a refusal", tc.addr, tc.remote, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CheckAddr(%q, %v) = %q, %v; want %q", tc.addr, tc.remote, got, err, tc.want)
		}
	}
}

// TestServerMetrics: the client server's own counters (pool.Server.Stats)
// are exported, and move: an open connection, one refused over
// max_connections, one closed for a missing hello.
func TestServerMetrics(t *testing.T) {
	root := kerneltest.NewRoot(t)
	sup, err := pool.NewSupervisor(root, []pool.Config{{Name: "m", Kind: pool.KindExec, MaxWorkers: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sup.Shutdown(context.Background(), pool.ShutdownOptions{Wait: true, CancelFutures: true}); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := ipc.Listen(sock, ipc.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := pool.NewServer(sup, ln, pool.ServerOptions{MaxConns: 1, HandshakeTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	m := New()
	hs := httptest.NewServer(m.Handler(nil))
	defer hs.Close()
	if _, ok := scrape(t, hs.URL)["cgpool_server_connections"]; ok {
		t.Errorf("cgpool_server_connections before WatchServer: want none (cgpool run has no server)")
	}
	m.WatchServer(srv)

	names := []string{"cgpool_server_connections", "cgpool_server_connections_refused_total",
		"cgpool_server_handshake_failures_total", "cgpool_server_slow_clients_dropped_total", "cgpool_server_accept_errors_total"}
	// waitFor scrapes until every named value is as wanted.
	waitFor := func(what string, want map[string]float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			fams := scrape(t, hs.URL)
			got := map[string]float64{}
			ok := true
			for _, name := range names {
				v, found := value(fams, name, nil)
				if !found {
					t.Fatalf("%s: %s not exported", what, name)
				}
				got[name] = v
				if w, care := want[name]; care && v != w {
					ok = false
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: server metrics %v, want %v", what, got, want)
			}
			time.Sleep(20 * time.Millisecond) // polling a scrape, with a deadline
		}
	}
	waitFor("no client yet", map[string]float64{names[0]: 0, names[1]: 0, names[2]: 0, names[3]: 0, names[4]: 0})

	silent, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitFor("one client, no hello yet", map[string]float64{names[0]: 1, names[2]: 0})
	over, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	waitFor("a second client over max_connections 1", map[string]float64{names[0]: 1, names[1]: 1})
	// The silent client's handshake timeout (300 ms) closes it.
	waitFor("the silent client past its handshake timeout", map[string]float64{names[0]: 0, names[1]: 1, names[2]: 1})

	var ours []*dto.MetricFamily
	for name, f := range scrape(t, hs.URL) {
		if strings.HasPrefix(name, "cgpool_server_") {
			ours = append(ours, f)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
}
