package workload

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	register(&Workload{
		Name:    "pool",
		Summary: "worker pool: a dispatcher hands tasks to workers that each sweep their own cache-sized working set",
		Unit:    "tasks/s",
		Flags:   poolFlags,
	})
}

type poolOpts struct {
	workers, inflight, passes int
	workingSet                int
}

func poolFlags(fs *flag.FlagSet) func(context.Context, Options) (Result, error) {
	p := &poolOpts{}
	fs.IntVar(&p.workers, "workers", 0, "worker threads `N` (default: --threads, or 2 per CPU)")
	fs.IntVar(&p.inflight, "inflight", 0, "tasks in flight `N` (default: one per CPU): fewer than workers, so workers sleep and wake")
	fs.IntVar(&p.workingSet, "working-set", 256<<10, "`BYTES` each worker sweeps per pass (about an L2 cache)")
	fs.IntVar(&p.passes, "passes", 2, "read-modify-write passes over the working set per task `N`")
	return func(ctx context.Context, o Options) (Result, error) { return pool(ctx, o, *p) }
}

// pool models a server's worker pool whose tasks touch per-worker state. A dispatcher thread
// keeps --inflight tasks outstanding, handing each new task to the next worker round-robin
// through that worker's pipe; the worker sweeps its own working set (warm only in the caches of
// the CPU it last ran on) and reports completion on a shared pipe. With more workers than CPUs,
// a woken worker's previous CPU is often busy: exactly the keep-local-or-migrate choice.
// Throughput is completed tasks per second.
func pool(ctx context.Context, o Options, p poolOpts) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	ncpu := runtime.NumCPU()
	if p.workers == 0 {
		p.workers = 2 * ncpu
		if o.Threads > 0 {
			p.workers = o.Threads
		}
	}
	if p.inflight == 0 {
		p.inflight = min(ncpu, p.workers)
	}
	if p.workers < 1 || p.inflight < 1 || p.inflight > p.workers || p.inflight > 4096 || p.workingSet < 64 || p.passes < 1 {
		return Result{}, errors.New("pool: need --workers >= 1, 1 <= --inflight <= min(workers, 4096), --working-set >= 64, --passes >= 1")
	}
	var done [2]int
	if err := unix.Pipe2(done[:], unix.O_CLOEXEC); err != nil {
		return Result{}, fmt.Errorf("pool: pipe: %w", err)
	}
	defer unix.Close(done[0])
	tasks := make([][2]int, p.workers)
	for i := range tasks {
		if err := unix.Pipe2(tasks[i][:], unix.O_CLOEXEC); err != nil {
			for _, t := range tasks[:i] {
				unix.Close(t[0])
				unix.Close(t[1])
			}
			unix.Close(done[1])
			return Result{}, fmt.Errorf("pool: pipe: %w", err)
		}
	}

	completed := make([]paddedCounter, p.workers)
	var ready, workers sync.WaitGroup
	errs := make(chan error, p.workers+1)
	for w := range p.workers {
		ready.Add(1)
		rfd := tasks[w][0]
		cnt := &completed[w]
		workers.Go(func() {
			runtime.LockOSThread()
			defer unix.Close(rfd)
			set := make([]byte, p.workingSet)
			for i := range set { // fault the pages in now, not during the measurement
				set[i] = byte(i)
			}
			var msg [4]byte
			token := []byte{1}
			ready.Done()
			for {
				n, err := readFull(rfd, msg[:])
				if err != nil {
					errs <- fmt.Errorf("worker read: %w", err)
					return
				}
				if n == 0 {
					return
				}
				seed := binary.LittleEndian.Uint32(msg[:])
				sweep(set, p.passes, seed)
				cnt.n.Add(1)
				if err := writeAll(done[1], token); err != nil {
					errs <- fmt.Errorf("worker write: %w", err)
					return
				}
			}
		})
	}
	ready.Wait()

	var stop atomic.Bool
	dispatcher := make(chan error, 1)
	t0 := time.Now()
	go func() {
		runtime.LockOSThread()
		var msg [4]byte
		next, seq := 0, uint32(0)
		send := func() error {
			seq++
			binary.LittleEndian.PutUint32(msg[:], seq)
			err := writeAll(tasks[next][1], msg[:])
			next = (next + 1) % p.workers
			return err
		}
		for range p.inflight {
			if err := send(); err != nil {
				dispatcher <- err
				return
			}
		}
		tokens := make([]byte, 256)
		for !stop.Load() {
			n, err := unix.Read(done[0], tokens)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				dispatcher <- fmt.Errorf("dispatcher read: %w", err)
				return
			}
			for range n {
				if err := send(); err != nil {
					dispatcher <- fmt.Errorf("dispatcher write: %w", err)
					return
				}
			}
		}
		dispatcher <- nil
	}()
	sleepCtx(ctx, o.Duration)
	elapsed := time.Since(t0)
	var total uint64
	for i := range completed {
		total += completed[i].n.Load()
	}
	stop.Store(true)
	derr := <-dispatcher // it stops at its next completion token, which is always coming
	for _, t := range tasks {
		unix.Close(t[1]) // EOF: workers finish what is queued and exit
	}
	// At most --inflight tokens are unread, far below a pipe's capacity: workers never block.
	workers.Wait()
	unix.Close(done[1])
	close(errs)
	all := []error{derr}
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return Result{Workload: "pool", Throughput: float64(total) / elapsed.Seconds(), Unit: "tasks/s",
		Ops: total, ElapsedS: elapsed.Seconds(), Threads: p.workers + 1,
		Params: map[string]any{"workers": p.workers, "inflight": p.inflight, "working_set": p.workingSet, "passes": p.passes}}, nil
}

// sweep does passes read-modify-write passes over set, one cache line at a time, in an order
// that depends on seed (so the compiler cannot drop the work and the prefetcher cannot
// hide misses entirely).
func sweep(set []byte, passes int, seed uint32) {
	lines := len(set) / 64
	stride := 17
	for gcd(stride, lines) != 1 {
		stride += 2
	}
	x := seed | 1
	for range passes {
		off := int(x % uint32(lines))
		for i := 0; i < lines; i++ {
			j := (off + i*stride) % lines // stride is coprime with lines: every line once
			set[j*64] += byte(x)
			x ^= uint32(set[j*64+1])
		}
	}
}

// readFull reads exactly len(b) bytes, or returns 0 at EOF.
func readFull(fd int, b []byte) (int, error) {
	got := 0
	for got < len(b) {
		n, err := unix.Read(fd, b[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if n == 0 {
			if got == 0 {
				return 0, nil
			}
			return got, errors.New("short message")
		}
		got += n
	}
	return got, nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
