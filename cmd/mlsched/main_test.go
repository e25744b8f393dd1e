package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as mlsched's exec gate and as a workload for capture tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == gateCommand {
		os.Exit(execGate(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == asMlsched { // the test binary run as mlsched itself
		os.Exit(run(os.Args[2:], os.Stdout, os.Stderr))
	}
	if out := os.Getenv("MLSCHED_TEST_WORKLOAD"); out != "" {
		sleepSpinWorkload(out)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// asMlsched as the test binary's first argument makes it run mlsched's commands.
const asMlsched = "__as-mlsched"

// sleepSpinWorkload runs two spinning threads and two threads that alternate 100 µs of work
// with 200 µs sleeps, for 2.5 s, and writes "spin TID" / "sleep TID" lines to out.
func sleepSpinWorkload(out string) {
	var mu sync.Mutex
	var lines []string
	var wg sync.WaitGroup
	end := time.Now().Add(2500 * time.Millisecond)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(sleeper bool) {
			defer wg.Done()
			runtime.LockOSThread()
			kind := "spin"
			if sleeper {
				kind = "sleep"
			}
			mu.Lock()
			lines = append(lines, fmt.Sprintf("%s %d", kind, unix.Gettid()))
			mu.Unlock()
			x := 0
			for time.Now().Before(end) {
				if !sleeper {
					x++
					continue
				}
				for t := time.Now(); time.Since(t) < 100*time.Microsecond; {
					x++
				}
				ts := unix.Timespec{Nsec: 200_000}
				unix.Nanosleep(&ts, nil)
			}
			_ = x
		}(i%2 == 0)
	}
	wg.Wait()
	os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func readTids(t *testing.T, path string) (spin, sleep map[uint32]bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	spin, sleep = map[uint32]bool{}, map[uint32]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		if f[0] == "spin" {
			spin[uint32(n)] = true
		} else {
			sleep[uint32(n)] = true
		}
	}
	return spin, sleep
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root, and CI is set: refusing to skip")
	}
	t.Skip("needs root to load BPF programs")
}
