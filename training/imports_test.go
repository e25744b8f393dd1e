package training

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDaemonDoesNotImportGorgonia proves that the packages the scheduler runs on never link
// gorgonia (or this package): only `mlsched train`/`eval` do.
func TestDaemonDoesNotImportGorgonia(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	for _, pkg := range []string{"github.com/mlsched/mlsched/model", "github.com/mlsched/mlsched/sched"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			if o := string(out); strings.Contains(o, "no Go files") || strings.Contains(o, "cannot find package") ||
				strings.Contains(o, "no required module provides") {
				t.Logf("%s: no package yet", pkg)
				continue
			}
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "gorgonia.org/") || dep == "github.com/mlsched/mlsched/training" {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
