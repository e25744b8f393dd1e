package vmtest

import (
	"fmt"
	"regexp"
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

// checkKernelLog returns the console lines that indicate a problem, except those matching
// one of allow. Each finding carries the surrounding lines so the failure shows the splat.
func checkKernelLog(console string, allow []*regexp.Regexp) []finding {
	lines := strings.Split(strings.ReplaceAll(console, "\r", ""), "\n")
	var out []finding
	lastEnd := -1
	for i, l := range lines {
		bad := kernelProblem.MatchString(l) && !notAProblem.MatchString(l)
		if m := scxDisabled.FindStringSubmatch(l); m != nil && !normalExits[m[2]] {
			bad = true
		}
		if !bad || allowed(l, allow) {
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
