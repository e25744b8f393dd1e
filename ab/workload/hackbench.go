package workload

import (
	"context"
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
		Name:    "hackbench",
		Summary: "wakeup-heavy message passing: groups of sender and receiver threads over socketpairs (or pipes)",
		Unit:    "messages/s",
		Flags:   hackbenchFlags,
	})
}

type hackbenchOpts struct {
	groups, fanout, size int
	pipe                 bool
}

func hackbenchFlags(fs *flag.FlagSet) func(context.Context, Options) (Result, error) {
	h := &hackbenchOpts{}
	fs.IntVar(&h.groups, "groups", 0, "groups of senders and receivers `G` (default: --threads/(2*fanout) rounded up, so --threads counts in whole groups of 2*fanout threads; else the number of CPUs)")
	fs.IntVar(&h.fanout, "fanout", 10, "senders and receivers per group `F`: each sender writes to every receiver of its group")
	fs.IntVar(&h.size, "size", 100, "message size in `BYTES`")
	fs.BoolVar(&h.pipe, "pipe", false, "pipes instead of unix socketpairs")
	return func(ctx context.Context, o Options) (Result, error) { return hackbench(ctx, o, *h) }
}

// hackbench is the scheduler benchmark of the same name, run for a fixed time: in each group F
// senders write small messages round-robin to F receivers, each receiver reading from its own
// socket. Senders outrun receivers, fill the socket buffers and block; every read frees room
// and wakes a sender. Throughput is messages received per second.
func hackbench(ctx context.Context, o Options, h hackbenchOpts) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	if h.fanout < 1 || h.size < 1 || h.size > 4096 || h.groups < 0 {
		return Result{}, fmt.Errorf("hackbench: need --fanout >= 1, 1 <= --size <= 4096, --groups >= 0")
	}
	if h.groups == 0 {
		h.groups = runtime.NumCPU()
		if o.Threads > 0 {
			h.groups = max(1, (o.Threads+2*h.fanout-1)/(2*h.fanout))
		}
	}
	// receivers[g*F+j] reads rfd, senders of group g write wfd.
	type channel struct{ rfd, wfd int }
	chans := make([]channel, h.groups*h.fanout)
	closeAll := func() {
		for _, c := range chans {
			if c.rfd > 0 {
				unix.Close(c.rfd)
			}
			if c.wfd > 0 {
				unix.Close(c.wfd)
			}
		}
	}
	for i := range chans {
		var fds [2]int
		var err error
		if h.pipe {
			err = unix.Pipe2(fds[:], unix.O_CLOEXEC)
		} else {
			fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		}
		if err != nil {
			closeAll()
			return Result{}, fmt.Errorf("hackbench: channel %d: %w", i, err)
		}
		chans[i] = channel{rfd: fds[0], wfd: fds[1]}
	}

	received := make([]paddedCounter, len(chans)) // bytes, one counter per receiver
	var stop atomic.Bool
	var ready, senders, receivers sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 2*len(chans))
	for g := 0; g < h.groups; g++ {
		group := chans[g*h.fanout : (g+1)*h.fanout]
		for j := range group {
			ready.Add(2)
			cnt := &received[g*h.fanout+j]
			rfd := group[j].rfd
			receivers.Go(func() {
				runtime.LockOSThread()
				buf := make([]byte, h.size)
				ready.Done()
				<-start
				for {
					n, err := unix.Read(rfd, buf)
					if err == unix.EINTR {
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("receiver read: %w", err)
						return
					}
					if n == 0 {
						return
					}
					cnt.n.Add(uint64(n))
				}
			})
			senders.Go(func() {
				runtime.LockOSThread()
				msg := make([]byte, h.size)
				ready.Done()
				<-start
				for !stop.Load() {
					for _, c := range group {
						if err := writeAll(c.wfd, msg); err != nil {
							errs <- fmt.Errorf("sender write: %w", err)
							return
						}
					}
				}
			})
		}
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	sleepCtx(ctx, o.Duration)
	elapsed := time.Since(t0)
	var bytes uint64
	for i := range received {
		bytes += received[i].n.Load()
	}
	stop.Store(true)
	senders.Wait()
	for i := range chans { // EOF for the receivers, once they drained what is in flight
		unix.Close(chans[i].wfd)
		chans[i].wfd = -1
	}
	receivers.Wait()
	for i := range chans {
		unix.Close(chans[i].rfd)
	}
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	msgs := bytes / uint64(h.size)
	transport := "socketpair"
	if h.pipe {
		transport = "pipe"
	}
	return Result{Workload: "hackbench", Throughput: float64(msgs) / elapsed.Seconds(), Unit: "messages/s",
		Ops: msgs, ElapsedS: elapsed.Seconds(), Threads: 2 * len(chans),
		Params: map[string]any{"groups": h.groups, "fanout": h.fanout, "size": h.size, "transport": transport}}, nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// paddedCounter keeps each thread's counter on its own cache line: shared lines would add
// the very cross-CPU traffic the benchmark is meant to expose to the scheduler.
type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}
