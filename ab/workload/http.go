package workload

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	register(&Workload{
		Name:    "http",
		Summary: "an HTTP server on 127.0.0.1 and an in-process keep-alive load generator",
		Unit:    "requests/s",
		Flags:   httpFlags,
	})
}

type httpOpts struct {
	conns, bodySize, work int
}

func httpFlags(fs *flag.FlagSet) func(context.Context, Options) (Result, error) {
	h := &httpOpts{}
	fs.IntVar(&h.conns, "conns", 0, "client connections `N`, each a closed loop of requests (default: --threads, or 4 per CPU)")
	fs.IntVar(&h.bodySize, "body", 1024, "response body `BYTES`")
	fs.IntVar(&h.work, "work", 2, "rounds of hashing the body per request `N` (server-side CPU work)")
	return func(ctx context.Context, o Options) (Result, error) { return httpLoad(ctx, o, *h) }
}

// httpLoad serves a small dynamic page on a loopback port and drives it with --conns
// keep-alive clients, each sending its next request when the last response is read (a closed
// loop, like wrk). Throughput is completed requests per second; latency percentiles are in
// the result's params.
func httpLoad(ctx context.Context, o Options, h httpOpts) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	if h.conns == 0 {
		h.conns = 4 * runtime.NumCPU()
		if o.Threads > 0 {
			h.conns = o.Threads
		}
	}
	if h.conns < 1 || h.bodySize < 1 || h.work < 0 {
		return Result{}, errors.New("http: need --conns >= 1, --body >= 1, --work >= 0")
	}
	body := make([]byte, h.bodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	// A bare initramfs (the test VM) or a fresh network namespace has lo down: bring it up,
	// as root can; otherwise listening works and every connection fails.
	if lo, err := net.InterfaceByName("lo"); err == nil && lo.Flags&net.FlagUp == 0 {
		if err := LoopbackUp(); err != nil {
			return Result{}, fmt.Errorf("http: the loopback interface is down and cannot be set up: %w", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Result{}, fmt.Errorf("http: listen: %w (is the loopback interface up?)", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hs := fnv.New64a()
			for range h.work {
				hs.Write(body)
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Header().Set("X-Sum", strconv.FormatUint(hs.Sum64(), 16))
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/"

	tr := &http.Transport{MaxIdleConns: h.conns, MaxIdleConnsPerHost: h.conns, MaxConnsPerHost: h.conns,
		DisableCompression: true, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stop atomic.Bool
	counts := make([]paddedCounter, h.conns)
	lat := make([][]time.Duration, h.conns)
	errs := make(chan error, h.conns)
	var wg sync.WaitGroup
	var t0 time.Time
	begin := make(chan struct{})
	for c := range h.conns {
		wg.Go(func() {
			<-begin
			buf := make([]byte, 32<<10)
			for !stop.Load() {
				req, _ := http.NewRequestWithContext(runCtx, http.MethodGet, url, nil)
				s := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					if stop.Load() || runCtx.Err() != nil {
						return
					}
					errs <- fmt.Errorf("http client: %w", err)
					cancel()
					return
				}
				if !stop.Load() {
					counts[c].n.Add(1)
					lat[c] = append(lat[c], time.Since(s))
				}
			}
		})
	}
	t0 = time.Now()
	close(begin)
	sleepCtx(runCtx, o.Duration)
	elapsed := time.Since(t0)
	var total uint64
	for i := range counts {
		total += counts[i].n.Load()
	}
	stop.Store(true)
	wg.Wait()
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer shutCancel()
	srv.Shutdown(shutCtx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return Result{}, fmt.Errorf("http: serve: %w", err)
	}
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds())
	}
	return Result{Workload: "http", Throughput: float64(total) / elapsed.Seconds(), Unit: "requests/s",
		Ops: total, ElapsedS: elapsed.Seconds(), Threads: h.conns,
		Params: map[string]any{"conns": h.conns, "body": h.bodySize, "work": h.work,
			"p50_us": pct(0.5), "p99_us": pct(0.99)}}, nil
}

// LoopbackUp sets lo up (needs CAP_NET_ADMIN): a bare initramfs or a fresh network namespace
// starts with it down.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
