package sched

// Guard watches the model's live accuracy over a sliding window of scored outcomes. When the
// window is full and the accuracy falls below the majority-class rate (what always answering
// the more frequent label would score), the model is worse than no model: the guard trips and
// the policy falls back to FIFO. It recovers when the accuracy is back above the majority rate
// by Margin. Predictions keep being made and scored while tripped, so recovery is observed.
type Guard struct {
	window  []uint8 // per outcome: bit 0 correct, bit 1 label
	next    int
	n       int
	correct int
	pos     int
	tripped bool
	// Margin is the hysteresis for recovery, as a fraction (0.02: two points above majority).
	Margin float64
	// OnChange is called when the guard trips (tripped true) or recovers.
	OnChange func(tripped bool, accuracy, majority float64)
	// Passive guards only measure the live accuracy (a fixed placement, --shadow): they never
	// trip.
	Passive bool
	stats   *Stats
}

// NewGuard returns a guard over the last window outcomes.
func NewGuard(window int, stats *Stats) *Guard {
	if window < 1 {
		window = 1
	}
	return &Guard{window: make([]uint8, window), Margin: 0.02, stats: stats}
}

// Tripped reports whether the policy is held at FIFO.
func (g *Guard) Tripped() bool { return g.tripped }

// Accuracy returns the window's accuracy and majority-class rate (0, 0 when empty).
func (g *Guard) Accuracy() (accuracy, majority float64) {
	if g.n == 0 {
		return 0, 0
	}
	pos := g.pos
	if g.n-pos > pos {
		pos = g.n - pos
	}
	return float64(g.correct) / float64(g.n), float64(pos) / float64(g.n)
}

// Observe adds one scored outcome.
func (g *Guard) Observe(correct, label bool) {
	var v uint8
	if correct {
		v |= 1
	}
	if label {
		v |= 2
	}
	if g.n == len(g.window) {
		old := g.window[g.next]
		g.correct -= int(old & 1)
		g.pos -= int(old >> 1)
	} else {
		g.n++
	}
	g.window[g.next] = v
	g.correct += int(v & 1)
	g.pos += int(v >> 1)
	g.next++
	if g.next == len(g.window) {
		g.next = 0
	}
	acc, maj := g.Accuracy()
	if g.stats != nil {
		g.stats.setLiveAccuracy(acc)
	}
	if g.n < len(g.window) || g.Passive {
		return
	}
	switch {
	case !g.tripped && acc < maj:
		g.setTripped(true, acc, maj)
	case g.tripped && acc >= maj+g.Margin:
		g.setTripped(false, acc, maj)
	}
}

func (g *Guard) setTripped(t bool, acc, maj float64) {
	g.tripped = t
	if g.stats != nil {
		g.stats.GuardActive.Store(t)
		if t {
			g.stats.GuardTrips.Add(1)
		}
	}
	if g.OnChange != nil {
		g.OnChange(t, acc, maj)
	}
}
