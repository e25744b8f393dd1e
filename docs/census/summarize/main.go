// Command summarize reads the strace -c tables written by docs/census/run.sh and prints, per
// workload, the most frequent syscalls, whether each has a feature bucket, and the share of
// calls that would fall into the "other" bucket. Run: go run ./docs/census/summarize docs/census/*.txt
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/mlsched/mlsched/features"
)

func main() {
	named := map[string]bool{}
	for _, sc := range features.BucketSyscalls {
		named[sc.Name] = true
	}
	total := map[string]float64{}
	for _, path := range os.Args[1:] {
		counts := parse(path)
		var sum, other float64
		for name, n := range counts {
			sum += n
			if !named[name] {
				other += n
			}
		}
		names := sortedByCount(counts)
		fmt.Printf("## %s: %.0f calls, %.2f%% in \"other\"\n\n| syscall | share | bucket |\n| --- | --- | --- |\n",
			strings.TrimSuffix(filepath.Base(path), ".txt"), sum, 100*other/sum)
		for _, name := range names[:min(15, len(names))] {
			b := "other"
			if named[name] {
				b = "own"
			}
			fmt.Printf("| %s | %.2f%% | %s |\n", name, 100*counts[name]/sum, b)
		}
		fmt.Println()
		for name, n := range counts {
			total[name] += n / sum // each workload weighs the same
		}
	}
	fmt.Printf("## Frequent syscalls without a bucket (mean share over the workloads)\n\n")
	for _, name := range sortedByCount(total) {
		if !named[name] && total[name]/float64(len(os.Args)-1) > 0.001 {
			fmt.Printf("- %s: %.2f%%\n", name, 100*total[name]/float64(len(os.Args)-1))
		}
	}
}

func parse(path string) map[string]float64 {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	counts := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[len(fs)-1] == "total" || fs[len(fs)-1] == "syscall" {
			continue
		}
		n, err := strconv.ParseFloat(fs[3], 64)
		if err != nil {
			continue
		}
		counts[fs[len(fs)-1]] += n
	}
	return counts
}

func sortedByCount(m map[string]float64) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return m[names[i]] > m[names[j]] })
	return names
}
