package bpf

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// abiObjects are every BPF object mlsched builds; each includes bpf/abi.h.
var abiObjects = map[string]func() (*ebpf.CollectionSpec, error){
	"capture": loadCapture, "sched": loadSched, "schedcompat": loadSchedcompat,
	"testprogs": loadTestprogs, "urbtest": loadUrbtest,
}

// exitInfoRecord is struct mls_exit_info as the Go struct ExitInfo lays it out (read whole
// with Variable.Get, so its offsets are the Go compiler's).
func exitInfoRecord() features.Record {
	r := features.Record{Name: "mls_exit_info", Size: int(reflect.TypeFor[ExitInfo]().Size())}
	names := map[string]string{"Kind": "kind", "ExitCPU": "exit_cpu", "ExitCode": "exit_code", "Reason": "reason", "Msg": "msg"}
	for f := range reflect.TypeFor[ExitInfo]().Fields() {
		r.Fields = append(r.Fields, features.Field{Name: names[f.Name], Offset: int(f.Offset), Size: int(f.Type.Size())})
	}
	return r
}

// checkRecord compares a Go record description with the struct of that name in spec's BTF,
// member by member: the same names in the same order, at the same offsets, of the same sizes.
func checkRecord(spec *btf.Spec, want features.Record) []string {
	var st *btf.Struct
	if err := spec.TypeByName(want.Name, &st); err != nil {
		return []string{fmt.Sprintf("struct %s: %v", want.Name, err)}
	}
	var errs []string
	if int(st.Size) != want.Size {
		errs = append(errs, fmt.Sprintf("sizeof(struct %s) = %d, Go has %d", want.Name, st.Size, want.Size))
	}
	var got []features.Field
	for _, m := range st.Members {
		size, err := btf.Sizeof(m.Type)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s.%s: %v", want.Name, m.Name, err))
		}
		got = append(got, features.Field{Name: m.Name, Offset: int(m.Offset.Bytes()), Size: size})
	}
	if !slices.Equal(got, want.Fields) {
		errs = append(errs, fmt.Sprintf("struct %s:\n  BTF %v\n  Go  %v", want.Name, got, want.Fields))
	}
	return errs
}

// checkEnum compares Go's values by name with the enum of that name in spec's BTF: every C
// value is in Go with the same number, and Go has nothing C lacks.
func checkEnum(spec *btf.Spec, name string, want map[string]int64) []string {
	var en *btf.Enum
	if err := spec.TypeByName(name, &en); err != nil {
		return []string{fmt.Sprintf("enum %s: %v", name, err)}
	}
	var errs []string
	seen := map[string]bool{}
	for _, v := range en.Values {
		seen[v.Name] = true
		g, ok := want[v.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("enum %s: %s = %d is not in Go", name, v.Name, int64(v.Value)))
		case g != int64(v.Value):
			errs = append(errs, fmt.Sprintf("enum %s: %s = %d, Go has %d", name, v.Name, int64(v.Value), g))
		}
	}
	for n := range want {
		if !seen[n] {
			errs = append(errs, fmt.Sprintf("enum %s: Go has %s, the header does not", name, n))
		}
	}
	return errs
}

// abiErrors checks every record and enum Go mirrors against one object's BTF.
func abiErrors(spec *btf.Spec) []string {
	var errs []string
	for _, r := range append(slices.Clone(features.ABIRecords), exitInfoRecord(), model.NetRecord) {
		errs = append(errs, checkRecord(spec, r)...)
	}
	for _, e := range features.ABIEnums {
		errs = append(errs, checkEnum(spec, e.Name, e.Values)...)
	}
	for name, vals := range ABICounterEnums() {
		errs = append(errs, checkEnum(spec, name, vals)...)
	}
	return errs
}

// Every Go offset, size and enum value of the BPF/Go contract against every object's BTF.
func TestABIMatchesEveryObject(t *testing.T) {
	for name, load := range abiObjects {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range abiErrors(spec.Types) {
			t.Errorf("%s: %s", name, e)
		}
	}
}

// The check fails on a mirror that disagrees: two swapped fields, a moved offset, a changed
// size, a renumbered or missing enum value.
func TestABICheckCatchesDrift(t *testing.T) {
	spec, err := loadSched()
	if err != nil {
		t.Fatal(err)
	}
	wake := slices.Clone(features.ABIRecords[0].Fields)
	wake[4], wake[5] = wake[5], wake[4] // prev_cpu <-> waker_cpu, same size and offsets swapped by name
	wake[4].Offset, wake[5].Offset = wake[5].Offset, wake[4].Offset
	moved := slices.Clone(features.ABIRecords[0].Fields)
	moved[10].Offset += 8
	for what, r := range map[string]features.Record{
		"swapped": {Name: "mls_wake", Size: features.WakeMaxSize, Fields: wake},
		"moved":   {Name: "mls_wake", Size: features.WakeMaxSize, Fields: moved},
		"size":    {Name: "mls_sched_outcome", Size: features.OutcomeSize + 8, Fields: features.ABIRecords[2].Fields},
	} {
		if len(checkRecord(spec.Types, r)) == 0 {
			t.Errorf("%s: not caught", what)
		}
	}
	counters := ABICounterEnums()["mls_sched_counter"]
	renumbered := map[string]int64{}
	for k, v := range counters {
		renumbered[k] = v
	}
	renumbered["MLS_SC_KEEP"]++
	missing := map[string]int64{}
	for k, v := range counters {
		if k != "MLS_SC_NO_CTX" {
			missing[k] = v
		}
	}
	for what, vals := range map[string]map[string]int64{"renumbered": renumbered, "missing": missing} {
		errs := checkEnum(spec.Types, "mls_sched_counter", vals)
		if len(errs) == 0 || !strings.Contains(strings.Join(errs, " "), "MLS_SC_") {
			t.Errorf("%s counter: not caught (%v)", what, errs)
		}
	}
}

// MaxCPUs, which the loader checks, is the C bound the scheduler's per-CPU loops and keep
// queues stop at.
func TestMaxCPUsMatchesABI(t *testing.T) {
	src, err := os.ReadFile("abi.h")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("#define MLS_MAX_CPUS %d\n", MaxCPUs)
	if !strings.Contains(string(src), want) {
		t.Errorf("abi.h lacks %q", strings.TrimSpace(want))
	}
}
