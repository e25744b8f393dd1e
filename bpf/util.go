package bpf

import (
	"errors"
	"fmt"
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

func mustPossibleCPUs() int {
	n, err := possibleCPUs()
	if err != nil || n < 1 {
		return 1
	}
	return n
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

// describeLoadError wraps a load error; with verbose it includes the whole verifier log.
func describeLoadError(what string, err error, verbose bool) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if verbose {
			return fmt.Errorf("%s: verifier rejected the program:\n%+v", what, ve)
		}
		return fmt.Errorf("%s: verifier rejected the program (run with -v for the full log): %v", what, ve)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%s: %w (run as root or with CAP_BPF and CAP_PERFMON)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
