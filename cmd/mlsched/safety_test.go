package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// setSysctl sets a sysctl for the test and restores it after; false if it cannot be set here.
func setSysctl(t *testing.T, path, v string) bool {
	t.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	if strings.TrimSpace(string(old)) == v {
		return true
	}
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		t.Logf("cannot set %s to %s: %v", path, v, err)
		return false
	}
	t.Cleanup(func() { os.WriteFile(path, old, 0o644) })
	return true
}

// sharedDir is a world-writable sticky directory, as /tmp is, owned by owner.
// privateParentDir is a directory of ours inside one only owner can enter (mode 0700).
func privateParentDir(t *testing.T, owner int) string {
	t.Helper()
	home := sharedDir(t, owner)
	sub := filepath.Join(home, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	return sub
}

func sharedDir(t *testing.T, owner int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mlsched-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, os.ModePerm|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, owner, owner); err != nil {
		t.Fatal(err)
	}
	return dir
}

// plant makes symbolic links owned by another user at each name, pointing at victim.
func plant(t *testing.T, victim string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.Symlink(victim, n); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(n, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
}

// userReadable fails unless path is a regular file (not a link) that others can read.
func userReadable(t *testing.T, path string) {
	t.Helper()
	li, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !li.Mode().IsRegular() || li.Mode().Perm()&0o004 == 0 {
		t.Errorf("%s: mode %v, want a regular file readable by other users", path, li.Mode())
	}
}

// Every file mlsched writes as root, with links planted by another user at every name it
// could open (the target and the old predictable ".partial" name; the random temporary names
// are covered in features/outfile): the link's target is byte-identical afterwards, the output
// is valid and readable, nothing else is left behind.
func TestWritesFollowNoPlantedLink(t *testing.T) {
	requireRoot(t)
	const precious = "precious: not to be overwritten\n"
	for _, prot := range []string{"0", "1"} {
		t.Run("protected_symlinks="+prot, func(t *testing.T) {
			if !setSysctl(t, "/proc/sys/fs/protected_symlinks", prot) {
				t.Skipf("cannot set fs.protected_symlinks=%s here", prot)
			}
			private := t.TempDir()
			victim := filepath.Join(private, "victim")
			if err := os.WriteFile(victim, []byte(precious), 0o600); err != nil {
				t.Fatal(err)
			}
			untouched := func(what string) {
				t.Helper()
				if b, _ := os.ReadFile(victim); string(b) != precious {
					t.Errorf("%s wrote through a planted link: victim now %q", what, b)
				}
			}
			dir := sharedDir(t, 0)
			at := func(n string) string { return filepath.Join(dir, n) }

			plant(t, victim, at("t.trace"), at("t.trace.partial"))
			code, _, errb := runSelf(t, "capture", "-o", at("t.trace"), "--duration", "1s", "--progress", "never")
			if code != 0 {
				t.Fatalf("capture exited %d: %s", code, errb)
			}
			untouched("capture")
			userReadable(t, at("t.trace"))
			forEachSample(t, at("t.trace"), func(*features.Sample) {})

			plant(t, victim, at("ab.json"), at("ab.json.partial"), at("ab.svg"), at("ab.svg.partial"))
			code, _, errs := runCLI(t, "ab", "--arm", "a=default", "--arm", "b=default", "--runs", "2", "--warmup", "0",
				"--json", at("ab.json"), "--plot", at("ab.svg"), "--", "sh", "-c", `echo '{"throughput": 1}'`)
			if code != 0 {
				t.Fatalf("ab exited %d: %s", code, errs)
			}
			untouched("ab")
			userReadable(t, at("ab.json"))
			if b, _ := os.ReadFile(at("ab.svg")); !bytes.HasPrefix(b, []byte("<svg")) {
				t.Errorf("ab plot is not an SVG: %.40q", b)
			}

			tr := filepath.Join(private, "in.trace")
			writeSynthTrace(t, tr, 2000, 3, 1_000_000)
			plant(t, victim, at("m.bin"), at("m.bin.partial"), at("c.svg"), at("c.svg.partial"))
			code, _, errs = runCLI(t, "train", "-o", at("m.bin"), "--plot", at("c.svg"), "--epochs", "2", tr)
			if code != 0 {
				t.Fatalf("train exited %d: %s", code, errs)
			}
			untouched("train")
			userReadable(t, at("m.bin"))
			if _, err := model.Load(at("m.bin")); err != nil {
				t.Errorf("trained model: %v", err)
			}
			if b, _ := os.ReadFile(at("c.svg")); !bytes.HasPrefix(b, []byte("<svg")) {
				t.Errorf("training plot is not an SVG: %.40q", b)
			}

			ents, _ := os.ReadDir(dir)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			want := "ab.json ab.json.partial ab.svg ab.svg.partial c.svg c.svg.partial m.bin m.bin.partial t.trace t.trace.partial"
			if strings.Join(names, " ") != want {
				t.Errorf("shared directory holds %v, want %s (no temporary file left)", names, want)
			}
		})
	}
}

// capMasks reads a thread's CapEff and CapPrm.
func capMasks(t *testing.T, status string) (eff, prm uint64, nnp bool, ok bool) {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0, 0, false, false // the thread exited
	}
	var seen int
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "CapEff":
			eff, _ = strconv.ParseUint(v, 16, 64)
			seen++
		case "CapPrm":
			prm, _ = strconv.ParseUint(v, 16, 64)
			seen++
		case "NoNewPrivs":
			nnp = v == "1"
			seen++
		}
	}
	if seen != 3 {
		t.Fatalf("%s lacks CapEff, CapPrm or NoNewPrivs:\n%s", status, b)
	}
	return eff, prm, nnp, true
}

// A capture as root keeps, once attached, only the capabilities captureKeepCaps names, on
// every thread, with no_new_privs set; the trace is still renamed into place.
func TestCaptureDropsCapabilities(t *testing.T) {
	requireRoot(t)
	bin := filepath.Join(t.TempDir(), "mlsched")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // AllThreadsSyscall needs a binary without cgo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		name string
		dir  string
	}{
		{"private directory", t.TempDir()},
		{"sticky directory of another user", sharedDir(t, nobody)},
		// Like `sudo mlsched capture -o ~/traces/x.trace` under a 0700 home: the rename looks
		// the path up again after the drop, through a directory root searches only with
		// CAP_DAC_READ_SEARCH.
		{"under another user's private directory", privateParentDir(t, nobody)},
	} {
		t.Run(c.name, func(t *testing.T) {
			trace := filepath.Join(c.dir, "caps.trace")
			var want uint64
			for cp := range captureKeepCaps(trace) {
				want |= 1 << cp
			}
			cmd := exec.Command(bin, "capture", "-o", trace, "--duration", "4s", "--progress", "never")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			main := filepath.Join("/proc", strconv.Itoa(pid), "status")
			deadline := time.Now().Add(3 * time.Second)
			for {
				_, _, nnp, _ := capMasks(t, main)
				if nnp {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("no_new_privs not set 3s into the capture:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // let the runtime start more threads
			tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "status"))
			checked := 0
			for _, st := range tasks {
				eff, prm, nnp, ok := capMasks(t, st)
				if !ok {
					continue
				}
				checked++
				if eff != want || prm != want || !nnp {
					t.Errorf("%s: CapEff %x CapPrm %x NoNewPrivs %v; want %x, %x, true", st, eff, prm, nnp, want, want)
				}
			}
			if checked < 2 {
				t.Errorf("checked %d threads; a Go process runs several", checked)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("capture: %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), "privileges ") || strings.Contains(out.String(), "kept all privileges") {
				t.Errorf("summary does not report the drop:\n%s", out.String())
			}
			forEachSample(t, trace, func(*features.Sample) {})
			t.Logf("%d threads at CapEff=CapPrm=%x; %s", checked, want, out.String())
		})
	}
}
