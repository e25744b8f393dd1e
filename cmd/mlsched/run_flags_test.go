package main

import (
	"strings"
	"testing"
)

// run refuses flags that do not fit the policy, with a usage error naming the flag, before it
// needs root or sched_ext: --shadow outside the model policy in the kernel, --infer with a fixed
// placement, --oncpu-threshold without --policy oncpu, --queue with a base queue alone,
// --save-model or --adapt-threshold without --adapt, a bad threshold objective, window or
// learning rate, and an unknown policy.
func TestRunRefusesMismatchedFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--policy", "vtime", "--shadow"}, "--shadow"},
		{[]string{"run", "--infer", "user", "--shadow"}, "--shadow"},
		{[]string{"run", "--policy", "keep", "--infer", "kernel"}, "--infer"},
		{[]string{"run", "--oncpu-threshold", "1ms"}, "--oncpu-threshold"},
		{[]string{"run", "--policy", "fifo", "--queue", "vtime"}, "--queue"},
		{[]string{"run", "--adapt=false", "--save-model", t.TempDir() + "/m.bin"}, "--save-model"},
		{[]string{"run", "--adapt=false", "--adapt-threshold", "keep"}, "--adapt-threshold"},
		{[]string{"run", "--adapt-threshold", "median"}, "keep, balanced or accuracy"},
		{[]string{"run", "--adapt-threshold-window", "0"}, "--adapt-threshold-window 0"},
		{[]string{"run", "--adapt-lr", "-1"}, "--adapt-lr"},
		{[]string{"run", "--policy", "nope"}, "unknown policy"},
		// Values that would be replaced by a default, wrap, or mean "never" without a word.
		{[]string{"run", "--slice", "0"}, "--slice"},
		{[]string{"run", "--slice", "-1ms"}, "--slice"},
		{[]string{"run", "--watchdog", "-1s"}, "--watchdog"},
		{[]string{"run", "--watchdog", "31s"}, "--watchdog"},
		{[]string{"run", "--pending-timeout", "0"}, "--pending-timeout"},
		{[]string{"run", "--keep-budget", "-1s"}, "--keep-budget"},
		{[]string{"run", "--guard-window", "0"}, "--guard-window"},
		{[]string{"run", "--stats", "-1s"}, "--stats"},
		{[]string{"run", "--user-stall", "-1s"}, "--user-stall"},
		{[]string{"run", "--policy", "oncpu", "--oncpu-threshold", "-1ms"}, "--oncpu-threshold"},
	} {
		code, out, errOut := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(out+errOut, c.want) {
			t.Errorf("mlsched %s: exit %d, want %d naming %s\n%s%s", strings.Join(c.args, " "), code, exitUsage, c.want, out, errOut)
		}
	}
}
