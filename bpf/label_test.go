package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/mlsched/mlsched/features"
)

// testSwitch is struct test_switch of testprogs.bpf.c.
type testSwitch struct {
	Runnable, Yielding, Voluntary, _ uint8
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// The same switches through both paths give the same labels. Each switch is told as
// sched_switch tells it to the capture probes (preempt, prev_state, a sched_yield mark) and as
// sched_ext's stopping() tells it to the scheduler (runnable: still on the runqueue, which a
// preempted or yielding task is and a blocked one is not). The BPF rule
// (mls_left_voluntarily, run in the kernel) decides "voluntary" from each set of facts; the
// capture path labels it through the joiner, the scheduler path through features.Label, as the
// dispatch loop scores outcomes.
func TestLabelsAgreeAcrossPaths(t *testing.T) {
	requireRoot(t)
	var objs testprogsObjects
	if err := loadTestprogsObjects(&objs, nil); err != nil {
		t.Fatalf("load test programs: %v", err)
	}
	defer objs.Close()

	const horizon = 1_000_000
	type sw struct {
		preempt   bool
		prevState uint32 // 0: TASK_RUNNING
		yielding  bool
		leaveNs   uint64
		want      uint8
	}
	var cases []sw
	for _, preempt := range []bool{false, true} {
		for _, st := range []uint32{0, 1, 2, 0x80} { // running, interruptible, uninterruptible, dead
			for _, y := range []bool{false, true} {
				for _, leave := range []uint64{horizon, horizon + 1} { // the horizon's edge
					want := uint8(0)
					// A task that entered sched_yield and was preempted before yielding is
					// about to yield: voluntary in both paths.
					if (!preempt && st != 0 || y) && leave <= horizon {
						want = 1
					}
					cases = append(cases, sw{preempt, st, y, leave, want})
				}
			}
		}
	}
	// Both sets of facts per switch, in one run of the BPF rule.
	var arr [64]testSwitch
	if 2*len(cases) > len(arr) {
		t.Fatalf("%d cases, the program takes %d switches", len(cases), len(arr))
	}
	for i, c := range cases {
		runnable := c.preempt || c.prevState == 0
		// Capture's facts: sched_switch's preempt and prev_state; the scheduler's: stopping()'s
		// runnable (the same task state, told the other way).
		arr[2*i] = testSwitch{Runnable: b2u(c.preempt || c.prevState == 0), Yielding: b2u(c.yielding)}
		arr[2*i+1] = testSwitch{Runnable: b2u(runnable), Yielding: b2u(c.yielding)}
	}
	if err := objs.TestSwitches.Set(arr); err != nil {
		t.Fatal(err)
	}
	if err := objs.TestNswitches.Set(uint32(2 * len(cases))); err != nil {
		t.Fatal(err)
	}
	if _, err := objs.MlsTestVoluntary.Run(&ebpf.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := objs.TestSwitches.Get(&arr); err != nil {
		t.Fatal(err)
	}

	for i, c := range cases {
		capVol, schedVol := arr[2*i].Voluntary != 0, arr[2*i+1].Voluntary != 0
		// The capture path: a sample at 1000 on CPU 0 with R = 7, then R's switch-out.
		var got uint8
		var n int
		j := features.NewJoiner(1, horizon, func(s *features.Sample) error { got, n = s.Label, n+1; return nil })
		j.Wake(&features.WakeEvent{PrevCPU: 0, RTid: 7, WTid: 8, TsNs: 1000})
		j.Switch(&features.SwitchEvent{Voluntary: capVol, CPU: 0, PrevTid: 7, NextTid: 8, TsNs: 1000 + c.leaveNs})
		// The scheduler path: the outcome stopping() reports, scored as the dispatch loop does.
		_, schedLabel := features.Label(schedVol, c.leaveNs, horizon)
		if n != 1 || got != schedLabel || got != c.want {
			t.Errorf("%+v: capture label %d (%d samples), scheduler label %d, want %d", c, got, n, schedLabel, c.want)
		}
		if capVol != features.LeftVoluntarily(c.preempt || c.prevState == 0, c.yielding) {
			t.Errorf("%+v: BPF rule and features.LeftVoluntarily disagree", c)
		}
	}
}
