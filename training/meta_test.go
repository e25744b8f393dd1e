package training

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mlsched/mlsched/model"
)

// Trace names are stored in the model's metadata, which holds at most model.MaxListLen UTF-8
// strings of at most model.MaxStringLen bytes; a Linux file name may be any bytes, and train
// may get any number of them: the list is made to fit instead of failing the export after
// training.
func TestMetaTracesFit(t *testing.T) {
	long := strings.Repeat("é", model.MaxStringLen) // 2 bytes each: cut at a rune
	names := []string{"caf\xe9.trace", long, ""}
	for len(names) < model.MaxListLen+500 {
		names = append(names, "t.trace")
	}
	got := metaTraces(names)
	if len(got) != model.MaxListLen {
		t.Fatalf("%d entries, want %d", len(got), model.MaxListLen)
	}
	for i, s := range got {
		if s == "" || len(s) > model.MaxStringLen || !utf8.ValidString(s) {
			t.Fatalf("entry %d (%d bytes, valid UTF-8 %v) does not fit the metadata", i, len(s), utf8.ValidString(s))
		}
	}
	if got[0] != "caf\uFFFD.trace" || !strings.HasPrefix(got[1], "éé") || got[2] != "?" {
		t.Errorf("entries %q, %.8q, %q", got[0], got[1], got[2])
	}
	if want := "... and 501 more"; got[len(got)-1] != want {
		t.Errorf("last entry %q, want %q", got[len(got)-1], want)
	}
	m := model.New(model.DefaultHidden, 1)
	m.Meta.Data.Traces = got
	if err := m.Validate(); err != nil {
		t.Fatalf("a model with these names: %v", err)
	}
	if few := metaTraces([]string{"a.trace", "b.trace"}); len(few) != 2 || few[0] != "a.trace" || few[1] != "b.trace" {
		t.Errorf("ordinary names changed: %q", few)
	}
}
