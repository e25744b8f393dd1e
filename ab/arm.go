package ab

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is what an arm runs the workload under.
type Kind string

const (
	KindDefault Kind = "default" // no sched_ext scheduler: the kernel's own (EEVDF/CFS)
	KindFIFO    Kind = "fifo"    // mlsched run --policy fifo
	KindVtime   Kind = "vtime"   // mlsched run --policy vtime
	KindModel   Kind = "model"   // mlsched run --model PATH (bare "model": the embedded default model)
	KindCmd     Kind = "cmd"     // any external sched_ext scheduler command
)

// Arm is one scheduler configuration under test.
type Arm struct {
	Name  string `json:"name"`
	Spec  string `json:"spec"`
	Kind  Kind   `json:"kind"`
	Model string `json:"model,omitempty"` // KindModel: the model file ("": the one built into mlsched)
	// Command is the scheduler's argv for KindCmd; for fifo and model arms the runner builds it
	// from its own binary.
	Command []string `json:"command,omitempty"`
}

// NeedsSchedExt reports whether the arm attaches a sched_ext scheduler.
func (a Arm) NeedsSchedExt() bool { return a.Kind != KindDefault }

// opsPrefix is what /sys/kernel/sched_ext/root/ops must start with while the arm runs ("" for
// any name: an external scheduler names itself).
func (a Arm) opsPrefix() string {
	if a.Kind == KindFIFO || a.Kind == KindVtime || a.Kind == KindModel {
		return "mlsched"
	}
	return ""
}

// ParseArm parses NAME=SPEC, where SPEC is default, fifo, vtime, model, model:PATH or
// cmd:COMMAND. A bare SPEC names the arm after its kind ("fifo", "model", ...). COMMAND is split into words like
// a shell would (quotes, backslashes) but runs without one.
func ParseArm(s string) (Arm, error) {
	name, spec, hasName := strings.Cut(s, "=")
	if !hasName || strings.HasPrefix(s, "cmd:") || strings.HasPrefix(s, "model:") {
		name, spec = "", s
	}
	name = strings.TrimSpace(name)
	a := Arm{Name: name, Spec: spec}
	kind, arg, hasArg := strings.Cut(spec, ":")
	switch Kind(kind) {
	case KindDefault, KindFIFO, KindVtime:
		if hasArg {
			return a, fmt.Errorf("arm %q: %s takes no argument", s, kind)
		}
		a.Kind = Kind(kind)
	case KindModel:
		if hasArg && arg == "" {
			return a, fmt.Errorf("arm %q: model:PATH needs a model file", s)
		}
		a.Kind, a.Model = KindModel, arg
	case KindCmd:
		words, err := SplitWords(arg)
		if err != nil {
			return a, fmt.Errorf("arm %q: %w", s, err)
		}
		if len(words) == 0 {
			return a, fmt.Errorf("arm %q: cmd:COMMAND needs a command", s)
		}
		a.Kind, a.Command = KindCmd, words
	default:
		return a, fmt.Errorf("arm %q: unknown scheduler %q (want default, fifo, vtime, model, model:PATH or cmd:COMMAND)", s, spec)
	}
	if a.Name == "" {
		a.Name = string(a.Kind)
	}
	if strings.ContainsAny(a.Name, " \t\n\"") {
		return a, fmt.Errorf("arm %q: the name must not contain spaces or quotes", s)
	}
	return a, nil
}

// SplitWords splits a command line into words the way a POSIX shell does for plain words,
// single quotes, double quotes and backslashes; it expands nothing.
func SplitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case c == '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
