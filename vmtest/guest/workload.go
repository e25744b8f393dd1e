package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// WorkloadReport is what `init workload` prints on stdout (one JSON object); the host
// decodes it with the same field names.
type WorkloadReport struct {
	Threads        int     `json:"threads"`
	Spinners       int     `json:"spinners"`
	Sleepers       int     `json:"sleepers"`
	PipePairs      int     `json:"pipe_pairs"`
	SpinIters      uint64  `json:"spin_iters"`
	SleepWakeups   uint64  `json:"sleep_wakeups"`
	PipeRoundTrips uint64  `json:"pipe_round_trips"`
	ElapsedS       float64 `json:"elapsed_s"`
	// MinThreadProgress is the smallest per-thread count: 0 means some thread starved.
	MinThreadProgress uint64 `json:"min_thread_progress"`
}

// workload runs a mixed load on dedicated OS threads for a bounded time: CPU spinners,
// threads that sleep 1 ms at a time, and pipe ping-pong pairs (blocking read/write on raw
// fds: real thread-to-thread wakeups), by default more threads than CPUs.
func workload(args []string) error {
	fs := flag.NewFlagSet("workload", flag.ContinueOnError)
	ncpu := runtime.NumCPU()
	dur := fs.Duration("duration", 5*time.Second, "how long to run")
	spin := fs.Int("spin", 2*ncpu, "spinning threads")
	sleep := fs.Int("sleep", 2*ncpu, "threads that sleep 1ms in a loop")
	pipes := fs.Int("pipes", ncpu, "pipe ping-pong pairs (2 threads each)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	n := *spin + *sleep + 2**pipes
	// One P per thread: with fewer, Go parks the surplus locked threads on futexes and the
	// kernel never sees more runnable threads than GOMAXPROCS.
	runtime.GOMAXPROCS(n + 2)

	progress := make([]uint64, n) // each slot written by one thread only
	var wl threads
	start := time.Now()
	slot := 0
	for i := 0; i < *spin; i++ {
		wl.spin(&progress[slot])
		slot++
	}
	for i := 0; i < *sleep; i++ {
		wl.sleep(&progress[slot])
		slot++
	}
	for i := 0; i < *pipes; i++ {
		if err := wl.pingPong(&progress[slot], &progress[slot+1]); err != nil {
			return err
		}
		slot += 2
	}
	time.Sleep(*dur)
	if err := wl.stop(); err != nil {
		return err
	}

	r := WorkloadReport{Threads: n, Spinners: *spin, Sleepers: *sleep, PipePairs: *pipes, ElapsedS: time.Since(start).Seconds()}
	r.MinThreadProgress = ^uint64(0)
	for i := range progress {
		v := atomic.LoadUint64(&progress[i])
		r.MinThreadProgress = min(r.MinThreadProgress, v)
		switch {
		case i < *spin:
			r.SpinIters += v
		case i < *spin+*sleep:
			r.SleepWakeups += v
		case (i-*spin-*sleep)%2 == 0:
			r.PipeRoundTrips += v
		}
	}
	if n == 0 {
		r.MinThreadProgress = 0
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// FloodReport is what `init flood` prints on stdout.
type FloodReport struct {
	Threads  int     `json:"threads"`
	Finished int     `json:"finished"`
	ElapsedS float64 `json:"elapsed_s"`
}

// flood creates many short-lived OS threads: a goroutine that locks its thread and returns
// without unlocking takes the thread down with it, so each one is a clone + exit, with a
// wakeup (the 100us sleep) in between.
func flood(args []string) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	n := fs.Int("threads", 2000, "threads to create in total")
	conc := fs.Int("concurrency", 200, "threads alive at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	sem := make(chan struct{}, *conc)
	var finished atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			defer func() { <-sem }()
			ts := unix.Timespec{Nsec: 100_000}
			_ = unix.Nanosleep(&ts, nil)
			_ = unix.Getppid()
			finished.Add(1)
		})
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(FloodReport{Threads: *n, Finished: int(finished.Load()), ElapsedS: time.Since(start).Seconds()})
}

// threads are the workload's locked OS threads, each counting its progress in its own slot.
type threads struct {
	halt atomic.Bool
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (w *threads) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

// stop ends every thread and returns what failed.
func (w *threads) stop() error {
	w.halt.Store(true)
	w.wg.Wait()
	return errors.Join(w.errs...)
}

// spin burns CPU, counting thousands of iterations.
func (w *threads) spin(p *uint64) {
	w.wg.Go(func() {
		runtime.LockOSThread()
		x := uint64(1)
		for !w.halt.Load() {
			for j := 0; j < 1000; j++ {
				x = x*6364136223846793005 + 1442695040888963407
			}
			atomic.AddUint64(p, 1)
		}
		_ = x
	})
}

// sleep sleeps 1 ms in a loop, counting wakeups.
func (w *threads) sleep(p *uint64) {
	w.wg.Go(func() {
		runtime.LockOSThread()
		ts := unix.Timespec{Nsec: int64(time.Millisecond)}
		for !w.halt.Load() {
			_ = unix.Nanosleep(&ts, nil)
			atomic.AddUint64(p, 1)
		}
	})
}

// pingPong starts a pair over two pipes: ping writes and waits for the reply (closing its end
// stops pong), pong echoes until EOF.
func (w *threads) pingPong(ping, pong *uint64) error {
	var ab, ba [2]int
	if err := unix.Pipe2(ab[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	if err := unix.Pipe2(ba[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	w.wg.Go(func() {
		runtime.LockOSThread()
		defer unix.Close(ab[1])
		defer unix.Close(ba[0])
		buf := []byte{1}
		for !w.halt.Load() {
			if _, err := unix.Write(ab[1], buf); err != nil {
				w.fail(fmt.Errorf("ping write: %w", err))
				return
			}
			if _, err := unix.Read(ba[0], buf); err != nil {
				w.fail(fmt.Errorf("ping read: %w", err))
				return
			}
			atomic.AddUint64(ping, 1)
		}
	})
	w.wg.Go(func() {
		runtime.LockOSThread()
		defer unix.Close(ab[0])
		defer unix.Close(ba[1])
		buf := []byte{0}
		for {
			k, err := unix.Read(ab[0], buf)
			if err != nil {
				w.fail(fmt.Errorf("pong read: %w", err))
				return
			}
			if k == 0 {
				return
			}
			if _, err := unix.Write(ba[1], buf); err != nil {
				w.fail(fmt.Errorf("pong write: %w", err))
				return
			}
			atomic.AddUint64(pong, 1)
		}
	})
	return nil
}
