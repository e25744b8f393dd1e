package features

import "testing"

const H = 1_000_000

type joinRec struct {
	j   *Joiner
	out []Sample
}

func newJoin() *joinRec {
	r := &joinRec{}
	r.j = NewJoiner(4, H, func(s *Sample) error { r.out = append(r.out, *s); return nil })
	return r
}

func wake(ts uint64, cpu uint16, w, r uint32) *WakeEvent {
	e := &WakeEvent{TsNs: ts, PrevCPU: cpu, WTid: w, RTid: r}
	e.Feats[3] = 7
	return e
}

func sw(ts uint64, cpu uint16, prev uint32, voluntary bool) *SwitchEvent {
	return &SwitchEvent{TsNs: ts, CPU: cpu, PrevTid: prev, NextTid: 999, Voluntary: voluntary}
}

func TestJoinVoluntaryYield(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 1, 10, 20))
	r.j.Switch(sw(1000+H/2, 1, 20, true))
	if len(r.out) != 1 || r.out[0].Label != 1 || r.out[0].Outcome != OutcomeVoluntary || r.out[0].LeaveNs != H/2 {
		t.Fatalf("%+v", r.out)
	}
	if r.out[0].Feats[3] != 7 || r.out[0].RTid != 20 || r.out[0].WTid != 10 {
		t.Fatalf("sample fields lost: %+v", r.out[0])
	}
}

func TestJoinPreempted(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 2, 10, 20))
	r.j.Switch(sw(1500, 2, 20, false))
	if len(r.out) != 1 || r.out[0].Label != 0 || r.out[0].Outcome != OutcomePreempted {
		t.Fatalf("%+v", r.out)
	}
}

func TestJoinHorizonBoundary(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 0, 10, 20))
	r.j.Wake(wake(1001, 1, 11, 21))
	r.j.Switch(sw(1000+H, 0, 20, true))   // exactly at H: still within
	r.j.Switch(sw(1001+H+1, 1, 21, true)) // just past H: was still running at H
	if len(r.out) != 2 || r.out[0].Label != 1 || r.out[1].Label != 0 || r.out[1].Outcome != OutcomeTimeout {
		t.Fatalf("%+v", r.out)
	}
}

func TestJoinTimeoutWithoutSwitch(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 3, 10, 20))
	// Events elsewhere move time forward; once past H plus the slack, R was still running at H.
	r.j.Wake(wake(1000+H+DefaultSlackNs/2, 0, 11, 21))
	if len(r.out) != 0 {
		t.Fatalf("labelled before the slack passed: %+v", r.out)
	}
	r.j.Advance(1000 + H + DefaultSlackNs + 1)
	if len(r.out) != 1 || r.out[0].Outcome != OutcomeTimeout || r.out[0].Label != 0 || r.out[0].RTid != 20 {
		t.Fatalf("%+v", r.out)
	}
	// A late switch-out of R on that CPU no longer matters.
	r.j.Switch(sw(1000+2*H, 3, 20, true))
	if len(r.out) != 1 {
		t.Fatalf("sample labelled twice: %+v", r.out)
	}
}

func TestJoinTaskExit(t *testing.T) {
	// R exits: it leaves the CPU without preemption, in state TASK_DEAD: voluntary.
	r := newJoin()
	r.j.Wake(wake(1000, 1, 10, 20))
	r.j.Switch(sw(2000, 1, 20, true))
	if len(r.out) != 1 || r.out[0].Label != 1 {
		t.Fatalf("%+v", r.out)
	}
}

func TestJoinMigrationOfR(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 1, 10, 20))
	// R shows up leaving CPU 2: that does not resolve the sample taken on CPU 1.
	r.j.Switch(sw(1500, 2, 20, true))
	if len(r.out) != 0 {
		t.Fatalf("resolved by another CPU's switch: %+v", r.out)
	}
	// CPU 1 switches away from someone else: R's switch-out from CPU 1 was missed.
	r.j.Switch(sw(1600, 1, 30, true))
	if len(r.out) != 0 || r.j.Stats.LostSwitch != 1 || r.j.Pending() != 0 {
		t.Fatalf("out %+v stats %+v pending %d", r.out, r.j.Stats, r.j.Pending())
	}
}

func TestJoinSeveralWakesOneSwitch(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 1, 10, 20))
	r.j.Wake(wake(1100, 1, 11, 20))
	r.j.Switch(sw(1200, 1, 20, true))
	if len(r.out) != 2 || r.out[0].LeaveNs != 200 || r.out[1].LeaveNs != 100 {
		t.Fatalf("%+v", r.out)
	}
}

func TestJoinFinish(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 1, 10, 20)) // horizon ends before the end: still running at H
	r.j.Wake(wake(5*H, 2, 11, 21))  // horizon runs past the end: unknown
	r.j.Wake(wake(5*H, 9, 11, 21))  // CPU out of range: counted
	r.j.Finish(5*H + H/2)
	if len(r.out) != 1 || r.out[0].Outcome != OutcomeTimeout {
		t.Fatalf("%+v", r.out)
	}
	st := r.j.Stats
	if st.Unresolved != 1 || st.BadCPU != 1 || st.Samples != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestJoinSteadyStateAllocs(t *testing.T) {
	r := newJoin()
	r.j.emit = func(*Sample) error { return nil }
	w := wake(0, 1, 10, 20)
	s := sw(0, 1, 20, true)
	ts := uint64(0)
	step := func() {
		ts += 1000
		w.TsNs, s.TsNs = ts, ts+500
		r.j.Wake(w)
		r.j.Switch(s)
	}
	step()
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("%v allocations per wake+switch", n)
	}
}

// A sink that fails (the trace's disk is full) gets no sample twice: the ones handed to it
// before and with the failure leave the pending set, on a switch and on a timeout alike.
func TestJoinSinkErrorHandsOutOnce(t *testing.T) {
	errFull := errorString("disk full")
	for _, viaTimeout := range []bool{false, true} {
		seen := map[uint32]int{}
		calls := 0
		j := NewJoiner(4, H, func(s *Sample) error {
			seen[s.WTid]++
			if calls++; calls == 2 {
				return errFull
			}
			return nil
		})
		for w := uint32(1); w <= 4; w++ {
			j.Wake(wake(1000+uint64(w), 1, w, 20))
		}
		var err error
		if viaTimeout {
			err = j.Advance(1000 + 10*H)
		} else {
			err = j.Switch(sw(1000+H/2, 1, 20, true))
		}
		if err != errFull {
			t.Fatalf("timeout %v: error %v, want the sink's", viaTimeout, err)
		}
		j.Finish(1000 + 20*H) // the rest: handed out now, or counted unresolved
		for w := uint32(1); w <= 4; w++ {
			if seen[w] > 1 {
				t.Errorf("timeout %v: sample of W %d handed out %d times", viaTimeout, w, seen[w])
			}
			if seen[w] == 0 && j.Stats.Unresolved == 0 {
				t.Errorf("timeout %v: sample of W %d neither handed out nor counted", viaTimeout, w)
			}
		}
		if got := uint64(len(seen)) + j.Stats.Unresolved; got != 4 {
			t.Errorf("timeout %v: %d handed out + %d unresolved, want 4 in all", viaTimeout, len(seen), j.Stats.Unresolved)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// A lost switch event on a CPU (the ring was full) counts the samples pending there as lost:
// timed out later, one whose R did leave within H would be labelled "still running".
func TestJoinSwitchLost(t *testing.T) {
	r := newJoin()
	r.j.Wake(wake(1000, 1, 10, 20))
	r.j.Wake(wake(1001, 2, 11, 21))
	r.j.SwitchLost(1)
	r.j.SwitchLost(99) // out of range: ignored
	r.j.Advance(1000 + 100*H)
	if len(r.out) != 1 || r.out[0].WTid != 11 || r.j.Stats.LostSwitch != 1 {
		t.Fatalf("out %+v, lost %d; want only CPU 2's sample out and CPU 1's counted lost", r.out, r.j.Stats.LostSwitch)
	}
}
