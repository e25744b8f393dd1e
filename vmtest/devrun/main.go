// Command devrun is the /init of vmtest/dev-run.sh, a quick private loop for the scheduler's
// developer: start `mlsched run ARGS`, show sched_ext state, run a small mixed workload, stop
// mlsched with SIGINT (or SIGKILL/SIGSTOP with DEVRUN_SIGNAL), report on /dev/ttyS1, power off.
// Arguments come from /devrun.args (one per line). Standard library only; build static.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var out io.Writer = os.Stdout

func main() {
	if len(os.Args) > 1 && os.Args[1] == "work" {
		work(os.Args[2:])
		return
	}
	defer func() {
		syscall.Sync()
		_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	devrun()
}

// hotplug offlines and onlines cpu1: the kernel asks the scheduler to restart each time.
func hotplug() {
	for _, v := range []string{"0", "1"} {
		err := os.WriteFile("/sys/devices/system/cpu/cpu1/online", []byte(v), 0)
		fmt.Fprintf(out, "cpu1 online=%s: err=%v\n", v, err)
		time.Sleep(3 * time.Second)
		for i := 0; i < 300 && read("/sys/kernel/sched_ext/state") != "enabled"; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Fprintf(out, "state=%s ops=%s\n", read("/sys/kernel/sched_ext/state"), read("/sys/kernel/sched_ext/root/ops"))
	}
}

// devrun is the developer loop's guest init: mount, run mlsched with the workload (or the
// baseline alone), signal it as asked, report.
func devrun() {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"bpf", "/sys/fs/bpf", "bpf"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		_ = syscall.Mount(m.src, m.dst, m.typ, 0, "")
	}
	if f, err := os.OpenFile("/dev/ttyS1", os.O_WRONLY, 0); err == nil {
		out = f
	}
	args := readLines("/devrun.args")
	cfg := map[string]string{}
	for _, l := range readLines("/devrun.env") {
		if k, v, ok := strings.Cut(l, "="); ok {
			cfg[k] = v
		}
	}
	fmt.Fprintf(out, "kernel=%s ncpu=%d\n", read("/proc/sys/kernel/osrelease"), runtime.NumCPU())
	fmt.Fprintf(out, "state_before=%s\n", read("/sys/kernel/sched_ext/state"))
	if cfg["BASELINE"] == "1" { // the default scheduler, for comparison
		w := exec.Command("/init", "work", cfg["DURATION"], cfg["WORKLOAD"])
		w.Stdout, w.Stderr = out, out
		_ = w.Run()
		fmt.Fprintln(out, "DEVRUN-DONE")
		return
	}
	cmd := exec.Command("/mlsched", args...)
	cmd.Stdout, cmd.Stderr = out, out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(out, "start mlsched: %v\n", err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Loading is slow under TCG (kernel BTF parsing, verification): wait for the attach.
	for read("/sys/kernel/sched_ext/state") != "enabled" && time.Since(t0) < 90*time.Second {
		select {
		case err := <-done:
			fmt.Fprintf(out, "mlsched exited early: %v\n", err)
			fmt.Fprintln(out, "DEVRUN-DONE")
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "attach_s=%.1f\n", time.Since(t0).Seconds())
	fmt.Fprintf(out, "state_running=%s ops=%s\n", read("/sys/kernel/sched_ext/state"), read("/sys/kernel/sched_ext/root/ops"))
	dur := cfg["DURATION"]
	if dur == "" {
		dur = "10s"
	}
	if cfg["HOTPLUG"] == "1" {
		hotplug()
	}
	if cfg["SIGNAL"] == "STOP" {
		_ = cmd.Process.Signal(syscall.SIGSTOP)
		fmt.Fprintln(out, "sent SIGSTOP to mlsched")
	}
	w := exec.Command("/init", "work", dur, cfg["WORKLOAD"])
	w.Stdout, w.Stderr = out, out
	wt := time.Now()
	werr := w.Run()
	fmt.Fprintf(out, "workload: err=%v wall=%s\n", werr, time.Since(wt).Round(time.Millisecond))
	fmt.Fprintf(out, "state_after_work=%s ops=%s\n", read("/sys/kernel/sched_ext/state"), read("/sys/kernel/sched_ext/root/ops"))
	if cfg["SIGNAL"] == "STOP" {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		time.Sleep(time.Second)
	}
	stop(cmd, done, cfg["SIGNAL"] == "KILL", t0)
}

// stop signals mlsched (SIGINT, or SIGKILL), waits for it and for sched_ext to be disabled.
func stop(cmd *exec.Cmd, done <-chan error, kill bool, t0 time.Time) {
	sig := syscall.SIGINT
	if kill {
		sig = syscall.SIGKILL
	}
	_ = cmd.Process.Signal(sig)
	select {
	case err := <-done:
		fmt.Fprintf(out, "mlsched exit: %v after %s\n", err, time.Since(t0).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		fmt.Fprintln(out, "mlsched did not exit within 10s")
	}
	for i := 0; i < 20 && read("/sys/kernel/sched_ext/state") != "disabled"; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(out, "state_end=%s\n", read("/sys/kernel/sched_ext/state"))
	fmt.Fprintln(out, "DEVRUN-DONE")
}

// work runs spinning threads, pipe ping-pong pairs and sleepers, more threads than CPUs.
func work(args []string) {
	d, _ := time.ParseDuration(args[0])
	pingpongOnly := len(args) > 1 && args[1] == "pingpong"
	runtime.GOMAXPROCS(runtime.NumCPU() * 4)
	var rounds, spins, sleeps atomic.Uint64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ { // ping-pong pairs on OS threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			var p1, p2 [2]int
			syscall.Pipe(p1[:])
			syscall.Pipe(p2[:])
			go func() {
				runtime.LockOSThread()
				b := make([]byte, 1)
				for {
					if n, _ := syscall.Read(p1[0], b); n <= 0 {
						return
					}
					syscall.Write(p2[1], b)
				}
			}()
			b := make([]byte, 1)
			for time.Now().Before(stop) {
				syscall.Write(p1[1], b)
				syscall.Read(p2[0], b)
				rounds.Add(1)
			}
			syscall.Close(p1[1])
		}()
	}
	for i := 0; i < 3 && !pingpongOnly; i++ { // spinners
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			x := 0
			for time.Now().Before(stop) {
				for j := 0; j < 100000; j++ {
					x += j
				}
				spins.Add(1)
			}
			_ = x
		}()
	}
	for i := 0; i < 4 && !pingpongOnly; i++ { // sleepers
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			for time.Now().Before(stop) {
				time.Sleep(time.Millisecond)
				sleeps.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("work: pingpong_rounds=%d spin_batches=%d sleeps=%d rate=%.0f rounds/s\n", rounds.Load(), spins.Load(), sleeps.Load(), float64(rounds.Load())/d.Seconds())
}

func readLines(p string) []string {
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	var l []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if t := strings.TrimSpace(s.Text()); t != "" {
			l = append(l, t)
		}
	}
	return l
}

func read(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "missing"
	}
	return strings.TrimSpace(string(b))
}
