package vmtest

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The cpio writer's output is what GNU cpio (if installed) reads back, names and sizes.
func TestCpioNewc(t *testing.T) {
	var buf bytes.Buffer
	w := newCpioWriter(&buf)
	writeTree(w, []string{"dev", "tmp"}, map[string]cpioData{
		"/init":              {perm: 0o755, data: []byte("#!bin\n")},
		"/etc/deep/file.txt": {perm: 0o644, data: []byte("hello, odd length")},
	})
	w.CharDev("dev/console", 5, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-byte aligned", buf.Len())
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("070701")) || !bytes.Contains(buf.Bytes(), []byte("TRAILER!!!\x00")) {
		t.Fatalf("not a newc archive with a trailer")
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: cannot cross-check the archive")
	}
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	for _, want := range []string{"dev\n", "tmp\n", "init\n", "etc/deep\n", "etc/deep/file.txt\n", "dev/console\n"} {
		if !strings.Contains(string(out)+"\n", strings.TrimSuffix(want, "\n")) {
			t.Errorf("cpio listing lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`-rwxr-xr-x .* 6 .* init`).Match(out) || !regexp.MustCompile(`crw------- .* 5, +1 .* dev/console`).Match(out) {
		t.Errorf("modes, sizes or device numbers wrong:\n%s", out)
	}
}

func TestKernelLogCheck(t *testing.T) {
	clean := `[    0.000000] Kernel command line: console=ttyS0 panic=-1
[    0.064000] tsc: Unable to calibrate against PIT
[    9.1] sched_ext: BPF scheduler "mlsched" enabled
[   12.0] sched_ext: BPF scheduler "mlsched" disabled (unregistered from user space)
`
	clean += "[    1.0] hid: raw HID events driver installed\n[    1.1] Installing knfsd (copyright (C) 1996 okir@monad.swb.de).\n"
	if f := checkKernelLog(clean, nil); len(f) != 0 {
		t.Errorf("clean log flagged: %+v", f)
	}
	for _, bad := range []string{
		"[ 3.1] WARNING: CPU: 1 PID: 55 at kernel/sched/ext.c:1234 scx_foo+0x1/0x2",
		"[ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
		"[ 3.1] Oops: general protection fault, probably for non-canonical address",
		"[ 3.1] Kernel panic - not syncing: Attempted to kill init!",
		"[ 3.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
		`[ 3.1] sched_ext: BPF scheduler "mlsched" disabled (runnable task stall)`,
		`[ 3.1] sched_ext: BPF scheduler "mlsched" disabled (runtime error)`,
		`[ 3.1] sched_ext: BPF scheduler "mlsched" errored, disabling`,
		"[ 3.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
		"[ 3.1] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
		"[ 3.1] Initramfs unpacking failed: invalid magic at start of compressed archive",
	} {
		f := checkKernelLog(clean+bad+"\n[ 4.0] after\n", nil)
		if len(f) != 1 || !strings.Contains(f[0].context, ">> "+bad) || !strings.Contains(f[0].context, "after") {
			t.Errorf("%q: findings %+v, want one with context", bad, f)
		}
	}
	stall := `[ 3.1] sched_ext: BPF scheduler "mlsched" disabled (runnable task stall)`
	if f := checkKernelLog(stall, []*regexp.Regexp{regexp.MustCompile(`disabled \(runnable task stall\)`)}); len(f) != 0 {
		t.Errorf("allowed line flagged: %+v", f)
	}
}

// The bad-input scenario's fixture is refused for its schema only (checked without a VM).
func TestOtherSchemaFixture(t *testing.T) {
	if len(otherSchemaModel(t)) < 48 {
		t.Fatal("fixture too short")
	}
}

// checkAccounting against totals seen in the VM (fifo and model runs of 7.2), and a lost task.
func TestCheckAccounting(t *testing.T) {
	_, _, fifo, _ := parseRunOutput("EXIT: unreg unregistered from user space ()\nTOTALS: enqueue=15381 select_direct=1003 ours=719 kthread=45 fifo_policy=14617 dispatch=15652 | events=0\n")
	_, _, mdl, _ := parseRunOutput("EXIT: unreg x ()\nTOTALS: enqueue=21001 select_direct=86 ours=9424 kthread=98 reenqueue=6109 no_running=592 event=4778 decision_rx=4778 keep=1796 migrate=3 no_idle=2795 timeout=183 | events=4778\n")
	_, _, guard, _ := parseRunOutput("EXIT: unreg x ()\nTOTALS: enqueue=62276 select_direct=172 ours=25051 kthread=269 reenqueue=18593 no_running=2185 event=14336 decision_rx=14336 decision_stale=176 keep=4992 migrate=8 no_idle=9160 timeout=176 move_fail=82 guard_fifo=1842 | events=1\n")
	for name, c := range map[string]map[string]uint64{"fifo": fifo.BPF, "model": mdl.BPF, "guard": guard.BPF} {
		if errs := accountingErrors(name, c); len(errs) > 0 {
			t.Errorf("%s totals flagged: %v", name, errs)
		}
	}
	lost := map[string]uint64{}
	for k, v := range mdl.BPF {
		lost[k] = v
	}
	lost["keep"] -= 500
	if len(accountingErrors("lost", lost)) == 0 {
		t.Errorf("500 tasks missing from the applied paths were not flagged")
	}
}
