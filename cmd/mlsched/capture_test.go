package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/sched"
)

// Capture 3 s of a workload that both sleeps and spins, on the host kernel: both labels occur,
// the sleeping threads' nanosleep dominates their features, every wakeup is accounted for,
// nothing is lost to the ring buffer, and the file reads back.
func TestCaptureIntegration(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	trace := filepath.Join(dir, "t.trace")
	tids := filepath.Join(dir, "tids")
	t.Setenv("MLSCHED_TEST_WORKLOAD", tids)
	code, stdout, stderr := runSelf(t, "capture", "-o", trace, "--duration", "3s", "--only-command", "--progress", "never",
		"--", os.Args[0])
	if code != 0 {
		t.Fatalf("capture exited %d: %s", code, stderr.String())
	}
	spin, sleep := readTids(t, tids)
	if len(spin) != 2 || len(sleep) != 2 {
		t.Fatalf("workload tids: spin %v sleep %v", spin, sleep)
	}

	var n, pos, nSleep, nSpin uint64
	var sleepMeans [features.NumBuckets]float64
	sum := forEachSample(t, trace, func(s *features.Sample) {
		n++
		pos += uint64(s.Label)
		switch {
		case sleep[s.RTid]:
			nSleep++
			for i, v := range features.Counts(&s.Feats) {
				sleepMeans[i] += float64(v)
			}
		case spin[s.RTid]:
			nSpin++
		}
	})
	t.Logf("samples %d positives %d (R sleeper %d, R spinner %d); summary %+v", n, pos, nSleep, nSpin, *sum)
	if pos == 0 || pos == n {
		t.Fatalf("want both labels: %d positives of %d", pos, n)
	}
	if nSleep == 0 || nSpin == 0 {
		t.Fatalf("want samples with a sleeping and with a spinning R: %d, %d", nSleep, nSpin)
	}
	top := 0
	for i, v := range sleepMeans {
		if v > sleepMeans[top] {
			top = i
		}
	}
	if features.BucketName(top) != "nanosleep" {
		t.Errorf("sleeping threads' top bucket is %s, want nanosleep", features.BucketName(top))
	}
	if err := sum.Accounted(); err != nil {
		t.Error(err)
	}
	if sum.RingDrops+sum.SwitchDrops+sum.DecodeErrors != 0 {
		t.Errorf("unexplained loss: %+v", *sum)
	}
	if sum.Samples != n {
		t.Errorf("trailer says %d samples, file has %d", sum.Samples, n)
	}
	if !strings.Contains(stdout.String(), "samples") {
		t.Errorf("no summary printed: %q", stdout.String())
	}
}

// --max-rate on a wakeup-heavy command: the samples stay near the cap, and the summary says
// how many wakeups were left out and how to keep them all.
func TestCaptureMaxRateSummary(t *testing.T) {
	requireRoot(t)
	trace := filepath.Join(t.TempDir(), "rate.trace")
	start := time.Now()
	code, stdout, stderr := runSelf(t, "capture", "-o", trace, "--max-rate", "200", "--only-command", "--progress", "never",
		"--", os.Args[0], asMlsched, "workload", "hackbench", "--duration", "1500ms", "--threads", "8")
	elapsed := time.Since(start).Seconds()
	if code != 0 {
		t.Fatalf("capture exited %d: %s", code, stderr.String())
	}
	out := stdout.String()
	t.Log(out)
	if !strings.Contains(out, "left out at random (--max-rate 200 per CPU; --max-rate 0 keeps every wakeup)") {
		t.Errorf("summary does not report the sampling:\n%s", out)
	}
	n := 0
	forEachSample(t, trace, func(*features.Sample) { n++ })
	// At most ~200/s on each CPU (a window's cap rounds up to one sample).
	if limit := 1.5*200*float64(runtime.NumCPU())*elapsed + 50; float64(n) > limit {
		t.Errorf("%d samples in %.1fs with --max-rate 200 on %d CPUs", n, elapsed, runtime.NumCPU())
	}
	if n == 0 {
		t.Errorf("no samples")
	}
}

// runSelf runs mlsched's command in a child process (the test binary as mlsched): a capture
// drops its privileges, which must not happen to the test process.
func runSelf(t *testing.T, args ...string) (code int, stdout, stderr *bytes.Buffer) {
	t.Helper()
	stdout, stderr = new(bytes.Buffer), new(bytes.Buffer)
	cmd := exec.Command(os.Args[0], append([]string{asMlsched}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout, stderr
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout, stderr
}

// forEachSample reads a whole trace, calls f for each sample, and returns the trace's summary.
func forEachSample(t *testing.T, path string, f func(*features.Sample)) *features.TraceSummary {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	r, err := features.NewTraceReader(file)
	if err != nil {
		t.Fatal(err)
	}
	var s features.Sample
	for {
		err := r.Next(&s)
		if err == io.EOF {
			return r.Summary()
		}
		if err != nil {
			t.Fatal(err)
		}
		f(&s)
	}
}

func TestCaptureRejectsBadInvocations(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"capture"}, exitUsage, "-o FILE is required"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--only-command"}, exitUsage, "needs a command"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--horizon", "-1s"}, exitUsage, "--horizon"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--ringbuf-mb", "3"}, exitUsage, "power of two"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--duration", "-1s"}, exitUsage, "--duration"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--max-tasks", "3"}, exitUsage, "--max-tasks 3"},
		{[]string{"capture", "-o", filepath.Join(dir, "x"), "--", "/no/such/cmd"}, exitUsage, "no/such/cmd"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
	if os.Geteuid() == 0 {
		// An unwritable output path is refused before anything is attached.
		var out, errb bytes.Buffer
		code := run([]string{"capture", "-o", "/proc/nope/x.trace", "--duration", "1s"}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "cannot write the trace") {
			t.Errorf("unwritable output: exit %d, %q", code, errb.String())
		}
	}
}

func TestInspectTruncatedTrace(t *testing.T) {
	var buf bytes.Buffer
	w, _ := features.NewTraceWriter(&buf, features.TraceHeader{SchemaID: features.SchemaID(), HorizonNs: 1e6})
	s := features.Sample{Label: 1, Outcome: features.OutcomeVoluntary}
	s.Feats[0] = features.FixedOne
	for i := 0; i < 100000; i++ {
		w.Write(&s)
	}
	w.Close(features.TraceSummary{})
	dir := t.TempDir()
	full := filepath.Join(dir, "full.trace")
	cut := filepath.Join(dir, "cut.trace")
	os.WriteFile(full, buf.Bytes(), 0o644)
	os.WriteFile(cut, buf.Bytes()[:buf.Len()/2], 0o644)

	var out, errb bytes.Buffer
	if code := run([]string{"inspect", full, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("inspect: %d %s", code, errb.String())
	}
	for _, key := range []string{`"samples": 100000`, `"positives": 100000`, `"drops": 0`, `"schema_id"`, `"horizon_ns": 1000000`} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("inspect --json lacks %s", key)
		}
	}
	out.Reset()
	errb.Reset()
	code := run([]string{"inspect", cut}, &out, &errb)
	if code != exitBadInput || !strings.Contains(errb.String(), "truncated") || !strings.Contains(errb.String(), "offset") {
		t.Fatalf("truncated trace: exit %d, %q", code, errb.String())
	}
	empty := filepath.Join(dir, "empty.trace")
	os.WriteFile(empty, nil, 0o644)
	errb.Reset()
	if code := run([]string{"inspect", empty}, &out, &errb); code != exitBadInput || !strings.Contains(errb.String(), "is empty") {
		t.Errorf("empty file: exit %d, %q", code, errb.String())
	}
}

// Ctrl-C or SIGTERM in the middle of a capture: mlsched exits 0 and the trace is complete.
func TestCaptureSignalLeavesValidTrace(t *testing.T) {
	requireRoot(t)
	bin := filepath.Join(t.TempDir(), "mlsched")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP} {
		trace := filepath.Join(t.TempDir(), "sig.trace")
		cmd := exec.Command(bin, "capture", "-o", trace, "--duration", "60s", "--progress", "never")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(sig)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: mlsched capture: %v\n%s", sig, err, out.String())
		}
		if !strings.Contains(out.String(), "signal") {
			t.Errorf("%v: summary does not give the reason: %s", sig, out.String())
		}
		f, err := os.Open(trace)
		if err != nil {
			t.Fatal(err)
		}
		r, err := features.NewTraceReader(f)
		if err != nil {
			t.Fatal(err)
		}
		var s features.Sample
		for err == nil {
			err = r.Next(&s)
		}
		f.Close()
		if err != io.EOF || r.Summary() == nil {
			t.Fatalf("%v: trace not complete: %v", sig, err)
		}
	}
}

// With the trace on stdout, the traced command's own output goes to stderr: mixed into the
// stream it corrupted the trace. And when --duration ends the capture before the command, the
// trace is completed at once (the probes detach) and only then does capture wait for the
// command: waiting with the probes attached and nobody reading the ring filled it.
func TestCaptureCommandOutputAndDuration(t *testing.T) {
	requireRoot(t)
	bin := filepath.Join(t.TempDir(), "mlsched")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	trace := filepath.Join(t.TempDir(), "stdout.trace")
	f, err := os.Create(trace)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "capture", "-o", "-", "--progress", "never", "--", "sh", "-c", "echo hello-from-the-command; sleep 0.5")
	cmd.Stdout, cmd.Stderr = f, &stderr
	err = cmd.Run()
	f.Close()
	if err != nil {
		t.Fatalf("capture -o -: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "hello-from-the-command") {
		t.Errorf("the command's output is not on stderr: %q", stderr.String())
	}
	forEachSample(t, trace, func(*features.Sample) {}) // a whole, valid trace

	d := filepath.Join(t.TempDir(), "d.trace")
	code, out, errOut := runSelf(t, "capture", "-o", d, "--duration", "1s", "--progress", "never", "--", "sleep", "3")
	if code != 0 || !strings.Contains(out.String(), "duration elapsed") || !strings.Contains(errOut.String(), "the trace is complete; waiting") {
		t.Errorf("capture --duration 1s -- sleep 3: exit %d, stdout %q, stderr %q; want exit 0, the trace completed before the wait", code, out.String(), errOut.String())
	}
	forEachSample(t, d, func(*features.Sample) {})
}

// Without root (or CAP_BPF+CAP_PERFMON), capture refuses before touching anything.
func TestCaptureNotRoot(t *testing.T) {
	requireRoot(t) // root is needed to switch to an unprivileged user

	// t.TempDir's parent is private to root: the unprivileged user could not run the binary.
	dir, err := os.MkdirTemp("", "mlsched-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, "mlsched")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	trace := filepath.Join(dir, "x.trace")
	cmd := exec.Command(bin, "capture", "-o", trace, "--duration", "1s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitNotRoot || !strings.Contains(string(out), "needs root") {
		t.Fatalf("exit %v, output %q; want exit %d saying it needs root", err, out, exitNotRoot)
	}
	if _, err := os.Stat(trace); !os.IsNotExist(err) {
		t.Errorf("output file created by a refused capture")
	}
}

// A command that fails ends the capture with its trace complete and kept, and mlsched exits 1
// so that a script sees the traced workload failed.
func TestCaptureFailingCommand(t *testing.T) {
	requireRoot(t)
	trace := filepath.Join(t.TempDir(), "t.trace")
	code, _, stderr := runSelf(t, "capture", "-o", trace, "--duration", "30s", "--progress", "never", "--", "sh", "-c", "sleep 0.5; exit 3")
	if code != exitFailure || !strings.Contains(stderr.String(), "command failed") {
		t.Fatalf("capture of a failing command: exit %d, stderr %q; want exit %d saying the command failed", code, stderr.String(), exitFailure)
	}
	forEachSample(t, trace, func(*features.Sample) {}) // a whole, valid trace
}

// A command ended by Ctrl-C (SIGINT to the whole process group, as a terminal sends it) is the
// capture stopped, not a failed command: exit 0 however the two signals race.
func TestStoppedBySignal(t *testing.T) {
	for _, c := range []struct {
		script string
		want   bool
	}{{"kill -INT $$", true}, {"kill -TERM $$", true}, {"exit 3", false}, {"kill -KILL $$", false}} {
		err := exec.Command("sh", "-c", c.script).Run()
		if got := stoppedBySignal(err); got != c.want {
			t.Errorf("%q (%v): stoppedBySignal %v, want %v", c.script, err, got, c.want)
		}
	}
	if stoppedBySignal(nil) {
		t.Error("nil error counted as stopped by a signal")
	}
}

// fullDisk is an output with room for cap bytes: a write past it writes what fits and fails
// with ENOSPC, as a file on a full filesystem does; Truncate gives the room back.
type fullDisk struct {
	buf []byte
	cap int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if room := d.cap - len(d.buf); len(p) > room {
		d.buf = append(d.buf, p[:max(room, 0)]...)
		return max(room, 0), &os.PathError{Op: "write", Path: "full", Err: syscall.ENOSPC}
	}
	d.buf = append(d.buf, p...)
	return len(p), nil
}

func (d *fullDisk) Truncate(n int64) error {
	d.buf = d.buf[:n]
	return nil
}

// A capture whose disk fills up ends its trace at the last whole block that reached the file,
// with a trailer that counts the rest as lost: the file is valid, every sample in it intact,
// and the accounting holds.
func TestCaptureSalvagesAFullDisk(t *testing.T) {
	requireRoot(t)
	disk := &fullDisk{cap: 100 << 10}
	sess, err := sched.StartCapture(sched.CaptureConfig{
		Probes: bpf.CaptureConfig{SelfTgid: uint32(os.Getpid()), RingBytes: 16 << 20, SampleEvery: 1},
		Header: features.TraceHeader{HorizonNs: 1e6, Command: "full disk test"},
	}, disk)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	// The sleeping and spinning workload (sleepSpinWorkload), in a process of its own (a
	// capture skips its own process's wakeups), run until the disk is full, at most 8 times.
	t.Setenv("MLSCHED_TEST_WORKLOAD", filepath.Join(t.TempDir(), "tids"))
	stop, done := make(chan string, 1), make(chan struct{})
	defer close(done)
	go func() {
		for range 8 {
			select {
			case <-done:
				return
			default:
			}
			exec.Command(os.Args[0]).Run()
		}
		stop <- "the workload ended before the disk was full"
	}()
	reason, err := sess.Run(stop, nil)
	if err == nil || !errors.Is(err, features.ErrWrite) {
		t.Fatalf("capture into %d bytes: reason %q, error %v; want a write error", disk.cap, reason, err)
	}
	rep, err := sess.Salvage(disk)
	if err != nil {
		t.Fatalf("salvage: %v", err)
	}
	if int64(len(disk.buf)) != rep.Bytes {
		t.Errorf("report says %d bytes, the file holds %d", rep.Bytes, len(disk.buf))
	}
	r, err := features.NewTraceReader(bytes.NewReader(disk.buf))
	if err != nil {
		t.Fatal(err)
	}
	var s features.Sample
	n := uint64(0)
	for err = r.Next(&s); err == nil; err = r.Next(&s) {
		n++
	}
	sum := r.Summary()
	if err != io.EOF || sum == nil {
		t.Fatalf("salvaged trace does not read to its end: %v", err)
	}
	if n == 0 || n != sum.Samples || sum.WriteLost == 0 || sum.Samples != rep.Summary.Samples {
		t.Errorf("read %d samples; trailer %d, write_lost %d; report %d", n, sum.Samples, sum.WriteLost, rep.Summary.Samples)
	}
	if err := sum.Accounted(); err != nil {
		t.Errorf("accounting: %v", err)
	}
	t.Logf("%d samples kept in %d bytes, %d lost to the full disk", n, len(disk.buf), sum.WriteLost)
}
