package bpf

import (
	"errors"
	"os"
)

// The errors every part of mlsched that touches the kernel reports, defined once: the loaders
// here, sched.Run and the A/B runner wrap them, and the CLI maps them to exit codes.
var (
	// ErrNoBTF means the kernel exposes no BTF, which CO-RE relocations need.
	ErrNoBTF = errors.New("kernel has no BTF (/sys/kernel/btf/vmlinux missing): a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")
	// ErrNoSchedExt means the kernel cannot run a sched_ext scheduler.
	ErrNoSchedExt = errors.New("kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT): needs Linux >= 6.12 built with it, e.g. Debian sid's 7.x, Ubuntu 25.04+, Fedora 42+, Arch")
	// ErrBusy means another sched_ext scheduler is attached.
	ErrBusy = errors.New("another sched_ext scheduler is enabled")
	// ErrNotRoot means attaching a scheduler was refused for want of privileges.
	ErrNotRoot = errors.New("attaching a sched_ext scheduler needs root")
	// ErrVerifier means the verifier rejected a program; the error is also a *LoadError that
	// carries the verifier's log.
	ErrVerifier = errors.New("verifier rejected the program")
)

// CheckBTF fails with ErrNoBTF unless the kernel exposes its BTF.
func CheckBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return ErrNoBTF
	}
	return nil
}
