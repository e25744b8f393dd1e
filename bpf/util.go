package bpf

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const noPrealloc = unix.BPF_F_NO_PREALLOC

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

var possibleCPUs = sync.OnceValues(ebpf.PossibleCPU)

// PossibleCPUs is the number of CPU ids the kernel may use: what the per-CPU maps are sized by,
// and so the range of CPU numbers in every event (at least 1).
func PossibleCPUs() int {
	n, err := possibleCPUs()
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// CheckFeatSlots says whether n feature slots can be asked for (MaxTasks): a power of two in
// [1024, 4194304].
func CheckFeatSlots(n uint64) error {
	if n&(n-1) != 0 || n < 1024 || n > 1<<22 {
		return fmt.Errorf("feature slots %d: want a power of two in [1024, 4194304]", n)
	}
	return nil
}

// featSlots returns the number of feature slots: want if set (a power of two), else the
// smallest power of two >= pid_max, capped at 65536 (40 MiB of state, 640 bytes a slot; on machines with a
// larger pid_max, a thread can lose its features to another live thread with the same low
// tid bits, and the probes count it).
func featSlots(want uint32) (uint32, error) {
	if want != 0 {
		if err := CheckFeatSlots(uint64(want)); err != nil {
			return 0, err
		}
		return want, nil
	}
	pidMax := uint64(1 << 16)
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			pidMax = v
		}
	}
	slots := uint32(1024)
	for uint64(slots) < pidMax && slots < 1<<16 {
		slots <<= 1
	}
	return slots, nil
}

// setVars sets constants in a spec's .rodata/.data before load.
func setVars(spec *ebpf.CollectionSpec, vars map[string]any) error {
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("set %s: no such variable in BPF object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// LoadError is a program the verifier rejected: it is ErrVerifier and, unwrapped, the
// *ebpf.VerifierError with the log.
type LoadError struct {
	What    string
	Log     *ebpf.VerifierError
	Verbose bool // print the whole verifier log
}

func (e *LoadError) Error() string {
	if e.Verbose {
		return fmt.Sprintf("%s: verifier rejected the program:\n%+v", e.What, e.Log)
	}
	return fmt.Sprintf("%s: verifier rejected the program (run with -v for the full log): %v", e.What, e.Log)
}

func (e *LoadError) Unwrap() []error { return []error{ErrVerifier, e.Log} }

// describeLoadError wraps a load error; with verbose a verifier error shows its whole log.
func describeLoadError(what string, err error, verbose bool) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return &LoadError{What: what, Log: ve, Verbose: verbose}
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%s: %w (run as root or with CAP_BPF and CAP_PERFMON)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
