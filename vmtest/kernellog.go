package vmtest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// kernelProblem matches console lines that mean the kernel (or sched_ext) is unhappy. A
// scenario that provokes one on purpose (the watchdog) allows it explicitly.
var kernelProblem = regexp.MustCompile(`BUG:|WARNING:|Oops|Kernel panic|\bpanic\b|\b[Ss]tall(s|ed|ing)?\b|soft lockup|hard LOCKUP|` +
	`general protection fault|Initramfs unpacking failed|Kernel panic|Call Trace:|blocked for more than|hung_task|` +
	`sched_ext:.*\b(error|errored|failed)\b`)

// scxDisabled is sched_ext's line when a scheduler goes away; the reason says whether it left
// normally ("unregistered from user space" etc.) or was thrown out.
var scxDisabled = regexp.MustCompile(`sched_ext: BPF scheduler "([^"]*)" disabled \(([^)]*)\)`)

// normalExits are the exit reasons of a scheduler that detached on request.
var normalExits = map[string]bool{
	"unregistered from user space":      true,
	"unregistered from BPF":             true,
	"unregistered from the main kernel": true,
}

// notAProblem: lines that match kernelProblem by accident.
var notAProblem = regexp.MustCompile(`Command line:|Kernel command line:`)

// int3Oops is the signature of TCG's cross-modifying-code race (see Env.Boot).
var int3Oops = regexp.MustCompile(`Oops: int3: `)

// finding is one suspicious console line and its neighbourhood.
type finding struct {
	line    int // 0-based
	text    string
	context string
}

// consoleLines splits a console log into lines.
func consoleLines(console string) []string {
	return strings.Split(strings.ReplaceAll(console, "\r", ""), "\n")
}

// checkKernelLog returns the console lines that indicate a problem, except those matching
// one of allow. Each finding carries the surrounding lines so the failure shows the splat.
func checkKernelLog(console string, allow []*regexp.Regexp) []finding {
	return checkKernelLines(consoleLines(console), allow, nil)
}

// checkKernelLines is checkKernelLog on split lines, also skipping the lines in excused.
func checkKernelLines(lines []string, allow []*regexp.Regexp, excused map[int]bool) []finding {
	var out []finding
	lastEnd := -1
	for i, l := range lines {
		bad := kernelProblem.MatchString(l) && !notAProblem.MatchString(l)
		if m := scxDisabled.FindStringSubmatch(l); m != nil && !normalExits[m[2]] {
			bad = true
		}
		if !bad || allowed(l, allow) || excused[i] {
			continue
		}
		if i <= lastEnd { // already shown in the previous finding's context
			out = append(out, finding{line: i, text: l})
			continue
		}
		lo, hi := max(0, i-8), min(len(lines), i+25)
		lastEnd = hi - 1
		var b strings.Builder
		for j := lo; j < hi; j++ {
			mark := "  "
			if j == i {
				mark = ">>"
			}
			fmt.Fprintf(&b, "%s %s\n", mark, lines[j])
		}
		if strings.Contains(l, "Oops: int3") {
			b.WriteString("   (an int3 Oops where a static key was just patched is usually TCG's cross-modifying-code race with several vCPU threads, not the code under test)\n")
		}
		out = append(out, finding{line: i, text: l, context: b.String()})
	}
	return out
}

func allowed(line string, allow []*regexp.Regexp) bool {
	for _, re := range allow {
		if re.MatchString(line) {
			return true
		}
	}
	return false
}

var (
	consoleStamp = regexp.MustCompile(`^\[\s*([0-9]+\.[0-9]+)\]`)
	scxEnabledAt = regexp.MustCompile(`sched_ext: BPF scheduler "[^"]*" enabled`)
	rcuStall     = regexp.MustCompile(`rcu: INFO: rcu_\w+ detected (expedited )?stalls`)
	stallAge     = regexp.MustCompile(`\bt=([0-9]+) jiffies`)
	// otherProblem ends a stall report: a different splat is judged on its own.
	otherProblem = regexp.MustCompile(`BUG:|WARNING:|Oops|Kernel panic|soft lockup|hard LOCKUP|blocked for more than|sched_ext:`)
)

// stallReportSpan bounds an RCU stall report: its lines follow the header within this much
// kernel time (the report is printed at once, task by task).
const stallReportSpan = 2.0

// detachedStalls returns the console lines (indices) of RCU stall reports that belong to the
// kernel's default scheduler and not to a sched_ext scheduler: the report came while no
// sched_ext scheduler was enabled (at boot before the first, or after one was disabled and
// before the next was enabled), and the stalled grace period began after that disable, so
// the default scheduler had the machine for the whole stall timeout. The grace period's age
// is the report's "t=N jiffies" at hz ticks per second. A report without its age, or one
// whose grace period began while a scheduler was enabled, is not excused.
func detachedStalls(lines []string, hz int) map[int]bool {
	out := map[int]bool{}
	detachedSince := 0.0 // boot: the default scheduler's; < 0 while a sched_ext scheduler is enabled
	for i := 0; i < len(lines); i++ {
		t, ok := stamp(lines[i])
		switch {
		case scxEnabledAt.MatchString(lines[i]):
			detachedSince = -1
		case scxDisabled.MatchString(lines[i]):
			if ok {
				detachedSince = t
			}
		case rcuStall.MatchString(lines[i]) && ok && detachedSince >= 0:
			end := i + 1
			for end < len(lines) {
				u, has := stamp(lines[end])
				if has && u > t+stallReportSpan || otherProblem.MatchString(lines[end]) || rcuStall.MatchString(lines[end]) {
					break
				}
				end++
			}
			var age float64 = -1
			for j := i; j < end; j++ {
				if m := stallAge.FindStringSubmatch(lines[j]); m != nil {
					n, _ := strconv.ParseFloat(m[1], 64)
					age = n / float64(hz)
					break
				}
			}
			if age >= 0 && t-age >= detachedSince {
				for j := i; j < end; j++ {
					out[j] = true
				}
			}
			i = end - 1
		}
	}
	return out
}

// stamp reads a console line's kernel time stamp in seconds.
func stamp(line string) (float64, bool) {
	m := consoleStamp.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}
