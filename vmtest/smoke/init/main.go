// Command init is the /init of the smoke-test initramfs (vmtest/smoke.sh).
// It checks that the guest kernel offers sched_ext and BTF, reports on the
// second serial port (/dev/ttyS1, a file on the host, kept apart from the
// kernel's console noise on ttyS0) and powers the VM off.
//
// Only the standard library is used, so go.mod is untouched; build static
// with CGO_ENABLED=0 (there is no libc in the initramfs).
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

func main() {
	// PID 1 must never exit (that panics the kernel): always power off.
	defer func() {
		syscall.Sync()
		_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	}()

	// The initramfs has empty mount points only; devtmpfs gives us ttyS1.
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := syscall.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			fmt.Fprintf(os.Stderr, "mount %s: %v\n", m.dst, err)
		}
	}

	out := os.Stdout
	if f, err := os.OpenFile("/dev/ttyS1", os.O_WRONLY, 0); err == nil {
		out = f
		defer f.Close()
	} else {
		fmt.Fprintf(os.Stderr, "open /dev/ttyS1: %v\n", err)
	}

	fmt.Fprintf(out, "kernel=%s\n", read("/proc/sys/kernel/osrelease"))
	fmt.Fprintf(out, "sched_ext_state=%s\n", read("/sys/kernel/sched_ext/state"))
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	fmt.Fprintf(out, "btf_vmlinux=%t\n", err == nil)
	// Guest uptime at report time: how much of the wall clock is kernel boot.
	fmt.Fprintf(out, "uptime_s=%s\n", strings.Fields(read("/proc/uptime") + " ?")[0])
	fmt.Fprintln(out, "SMOKE-DONE")
}

// read returns the trimmed content of a file, or "missing: <err>".
func read(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "missing: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}
