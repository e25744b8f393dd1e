package training

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

func TestTrainLearnsKnownRule(t *testing.T) {
	dir := t.TempDir()
	p := synthTraceFile(t, dir, "a.trace", 12000, 1, 1_000_000)
	ds, err := LoadTraces([]string{p}, 0.25, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Val) != 3000 || len(ds.Train) != 9000 {
		t.Fatalf("split %d/%d, want 9000/3000", len(ds.Train), len(ds.Val))
	}
	// The split is by time: every validation sample is later than every training sample.
	var lastTrain uint64
	for _, r := range ds.Train {
		lastTrain = max(lastTrain, ds.TsNs[r])
	}
	for _, r := range ds.Val {
		if ds.TsNs[r] <= lastTrain {
			t.Fatalf("validation sample at %d not after the training data (%d)", ds.TsNs[r], lastTrain)
		}
	}
	var epochs int
	res, err := Train(ds, Config{Epochs: 8, Seed: 7, Progress: func(EpochStats) { epochs++ }})
	if err != nil {
		t.Fatal(err)
	}
	if epochs != 8 || len(res.History) != 8 {
		t.Errorf("progress called %d times, history %d, want 8", epochs, len(res.History))
	}
	r := res.Report
	t.Logf("net %+v threshold %.3f", r.Net, r.Threshold)
	t.Logf("majority acc %.3f heuristic acc %.3f (t=%d)", r.Majority.Accuracy, r.Heuristic.Accuracy, r.HeuristicNs)
	if r.Net.Accuracy < 0.95 {
		t.Errorf("validation accuracy %.3f, want >= 0.95", r.Net.Accuracy)
	}
	if r.Net.N != 3000 {
		t.Errorf("report on %d samples, want the 3000 validation samples", r.Net.N)
	}
	m := res.Model
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if m.HorizonNs != 1_000_000 || m.Hidden != model.DefaultHidden {
		t.Errorf("horizon %d hidden %d", m.HorizonNs, m.Hidden)
	}
	if m.Meta.Data.Samples != 12000 || len(m.Meta.Data.Traces) != 1 {
		t.Errorf("data summary %+v", m.Meta.Data)
	}
	if len(m.Meta.Metrics.Baselines) != 2 {
		t.Errorf("baselines %+v", m.Meta.Metrics.Baselines)
	}

	// The exported model, evaluated through model/'s own inference on the raw trace, agrees.
	ev, err := EvaluateFiles(m, []string{p})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Net.N != 12000 || ev.Net.Accuracy < 0.95 {
		t.Errorf("eval on the whole trace: %+v", ev.Net)
	}
}

func TestTrainDeterministic(t *testing.T) {
	dir := t.TempDir()
	p := synthTraceFile(t, dir, "a.trace", 3000, 2, 1_000_000)
	var out [2][]byte
	for i := range out {
		ds, err := LoadTraces([]string{p}, 0.2, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Train(ds, Config{Epochs: 2, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		res.Model.Meta.CreatedUnixNs = 0
		if out[i], err = res.Model.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out[0], out[1]) {
		t.Error("two runs with the same seed and data gave different models")
	}
}

func TestLoadRefusesMismatchAndLimit(t *testing.T) {
	dir := t.TempDir()
	a := synthTraceFile(t, dir, "a.trace", 100, 1, 1_000_000)
	b := synthTraceFile(t, dir, "b.trace", 100, 2, 2_000_000)
	if _, err := LoadTraces([]string{a, b}, 0.2, 0, 0); !errors.Is(err, ErrHorizonMismatch) {
		t.Errorf("two horizons: %v, want ErrHorizonMismatch", err)
	}
	// Relabelled for a horizon no longer than either capture's, they mix.
	ds, err := LoadTraces([]string{a, b}, 0.2, 0, 500_000)
	if err != nil {
		t.Fatalf("relabel for 500µs: %v", err)
	}
	if ds.HorizonNs != 500_000 || ds.Len() != 200 {
		t.Errorf("relabelled data set: horizon %d, %d samples", ds.HorizonNs, ds.Len())
	}
	if _, err := LoadTraces([]string{a, b}, 0.2, 0, 1_500_000); !errors.Is(err, ErrHorizonMismatch) {
		t.Errorf("horizon longer than a capture's: %v, want ErrHorizonMismatch", err)
	}
	if _, err := LoadTraces([]string{a}, 0.2, 50, 0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v, want ErrTooLarge", err)
	}
	// A trace of another feature schema.
	ds, _ = NewDataset(0.2, 0)
	var buf bytes.Buffer
	w, err := features.NewTraceWriter(&buf, features.TraceHeader{SchemaID: features.SchemaID() + 1, HorizonNs: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Close(features.TraceSummary{})
	if err := ds.Add("other", &buf); !errors.Is(err, features.ErrSchemaMismatch) {
		t.Errorf("other schema: %v, want features.ErrSchemaMismatch", err)
	}
}

func TestRelabel(t *testing.T) {
	for _, c := range []struct {
		label   uint8
		leaveNs uint64
		h       uint64
		want    uint8
	}{
		{1, 300, 500, 1}, {1, 500, 500, 1}, {1, 501, 500, 0}, {0, 100, 500, 0},
	} {
		s := features.Sample{Label: c.label, LeaveNs: c.leaveNs, Outcome: features.OutcomeVoluntary}
		if c.label == 0 {
			s.Outcome = features.OutcomePreempted
		}
		Relabel(&s, c.h)
		if s.Label != c.want || (s.Label == 1) != (s.Outcome == features.OutcomeVoluntary) {
			t.Errorf("label %d leave %d for h %d: got label %d outcome %v, want %d", c.label, c.leaveNs, c.h, s.Label, s.Outcome, c.want)
		}
	}
}

// --per-trace: each trace gives at most N training rows, a random subset of its training part
// (the same on every run), in time order; validation keeps every row; 0 keeps all.
func TestTrainPerTrace(t *testing.T) {
	dir := t.TempDir()
	big := synthTraceFile(t, dir, "big.trace", 5000, 1, 1e6)
	small := synthTraceFile(t, dir, "small.trace", 500, 2, 1e6)
	all, err := LoadTraces([]string{big, small}, 0.2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	capped, err := LoadTracesPerTrace([]string{big, small}, 0.2, 0, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Train) != 4400 || len(capped.Train) != 1000+400 || len(capped.Val) != len(all.Val) {
		t.Fatalf("train rows %d (all) and %d (capped), val %d and %d; want 4400, 1400, equal val", len(all.Train), len(capped.Train), len(all.Val), len(capped.Val))
	}
	inBig := 0
	for i, r := range capped.Train {
		if int(r) < 5000 {
			inBig++
		}
		if i > 0 && int(capped.Train[i-1]) < 5000 == (int(r) < 5000) && capped.TsNs[capped.Train[i-1]] > capped.TsNs[r] {
			t.Fatalf("rows not in time order at %d", i)
		}
	}
	if inBig != 1000 {
		t.Fatalf("%d rows of the big trace, want 1000", inBig)
	}
	again, err := LoadTracesPerTrace([]string{big, small}, 0.2, 0, 0, 1000)
	if err != nil || !slices.Equal(again.Train, capped.Train) {
		t.Fatalf("not deterministic: %v", err)
	}
}

// --count-dropout: a net trained with the counts hidden on some steps answers from R's
// scheduling state when the counts say nothing (all at their training mean). The data: the
// futex count decides the label exactly (synthSample); the voluntary average agrees with it
// on 90% of the samples. Without dropout the net may lean on the count alone; with it, it
// must also learn the average.
func TestTrainCountDropout(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	samples := make([]features.Sample, 12000)
	for i := range samples {
		s := synthSample(rng, uint64(i+1)*10_000)
		vol := s.Label == 1
		if rng.IntN(10) == 0 {
			vol = !vol
		}
		s.RVol = 6000
		if vol {
			s.RVol = 60000
		}
		s.SetState(s.State())
		samples[i] = s
	}
	p := filepath.Join(dir, "v.trace")
	if err := os.WriteFile(p, writeTrace(t, 1_000_000, samples), 0o644); err != nil {
		t.Fatal(err)
	}
	// The state-only accuracy: every count at the model's training mean, the extras as recorded.
	stateOnly := func(m *model.Model) float64 {
		pr := model.NewPredictor(m)
		right := 0
		for i := range samples {
			in := samples[i].Feats
			for j := range features.NumBuckets {
				in[j] = uint32(math.Round(math.Expm1(float64(m.Mean[j])) * features.FixedOne))
			}
			if pr.KeepLocal(&in) == (samples[i].Label == 1) {
				right++
			}
		}
		return float64(right) / float64(len(samples))
	}
	var acc, loss [2]float64
	for i, drop := range []float64{0, 0.5} {
		ds, err := LoadTraces([]string{p}, 0.25, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Train(ds, Config{Epochs: 8, Seed: 7, CountDropout: drop})
		if err != nil {
			t.Fatal(err)
		}
		acc[i], loss[i] = stateOnly(res.Model), res.History[len(res.History)-1].TrainLoss
		t.Logf("count dropout %.1f: training loss %.4f, validation accuracy %.3f, from the state alone %.3f, notes %q",
			drop, loss[i], res.Report.Net.Accuracy, acc[i], res.Model.Meta.Notes["count_dropout"])
		if res.Report.Net.Accuracy < 0.95 {
			t.Errorf("count dropout %.1f: validation accuracy %.3f, want >= 0.95 (the counts decide the label)", drop, res.Report.Net.Accuracy)
		}
		if got, want := res.Model.Meta.Notes["count_dropout"], map[bool]string{false: "", true: "0.5"}[drop > 0]; got != want {
			t.Errorf("count dropout %.1f: note %q, want %q", drop, got, want)
		}
	}
	// Half the training steps without the counts that decide the label: the training loss is
	// well above the one with every count seen (the dropout is applied), and the state alone
	// answers as well as its 90% agreement allows.
	if loss[1] < 1.5*loss[0] {
		t.Errorf("training loss %.4f with count dropout 0.5, %.4f without: the counts were not hidden", loss[1], loss[0])
	}
	if acc[1] < 0.85 {
		t.Errorf("with count dropout 0.5, accuracy from the state alone %.3f, want >= 0.85 (the average agrees with the label 90%% of the time)", acc[1])
	}
	if _, err := Train(&Dataset{}, Config{CountDropout: 1}); err == nil || !strings.Contains(err.Error(), "dropout") {
		t.Errorf("count dropout 1: %v, want a refusal naming it", err)
	}
}

// Config.Stop ends training after the epoch it first answers true: the result has that many
// epochs, keeps the best of them, and the model's notes say where it stopped.
func TestTrainStop(t *testing.T) {
	p := synthTraceFile(t, t.TempDir(), "a.trace", 3000, 2, 1_000_000)
	ds, err := LoadTraces([]string{p}, 0.2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	res, err := Train(ds, Config{Epochs: 6, Seed: 3, Stop: func() bool { asked++; return asked == 2 }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stopped != 2 || len(res.History) != 2 || res.BestEpoch < 1 || res.BestEpoch > 2 {
		t.Fatalf("stopped %d, %d epochs, best %d; want stopped after 2 of 2 epochs", res.Stopped, len(res.History), res.BestEpoch)
	}
	if got := res.Model.Meta.Notes["stopped_after_epoch"]; got != "2" {
		t.Errorf("note stopped_after_epoch = %q, want 2", got)
	}
	if err := res.Model.Validate(); err != nil {
		t.Errorf("the stopped model is not valid: %v", err)
	}
	full, err := Train(ds, Config{Epochs: 2, Seed: 3, Stop: func() bool { return false }})
	if err != nil || full.Stopped != 0 || full.Model.Meta.Notes["stopped_after_epoch"] != "" {
		t.Errorf("never stopped: stopped %d, note %q, %v", full.Stopped, full.Model.Meta.Notes["stopped_after_epoch"], err)
	}
}
