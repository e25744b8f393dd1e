// Package features owns mlsched's feature schema — the syscall -> bucket table and the decay
// constants shared with the BPF code — plus the events the BPF probes emit, the trace file
// format, and the label join that turns a stream of wake and switch events into samples.
//
// It is standard library only: the daemon, the trainer and the tests all import it, and it must
// not pull BPF loading or training code along.
package features

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"sort"
)

const (
	// NumBuckets is the number of decayed syscall counts per task: the model's input width.
	NumBuckets = 64
	// OtherBucket collects every syscall without a bucket of its own.
	OtherBucket = NumBuckets - 1

	// FixedShift is the number of fractional bits of a decayed count: 1.0 is 1<<FixedShift.
	FixedShift = 16
	// FixedOne is a count of 1.0 in fixed point.
	FixedOne = 1 << FixedShift

	// DecayNum/DecayDen is the decay applied per syscall of the task: 63/64, so a count
	// remembers roughly the task's last 64 syscalls (the steady state of v = v*d + 1 is 64).
	DecayNum = 63
	DecayDen = 64

	// PowShift is the number of fractional bits of the decay power table.
	PowShift = 31
	// PowLen is the decay power table's length. (63/64)^1024 ~ 1e-7: any older contribution
	// is below one fixed-point unit even at the maximum count, so it decays to exactly zero.
	PowLen = 1024

	// SyscallTableLen covers x86_64 syscall numbers; larger numbers go to OtherBucket.
	SyscallTableLen = 512
)

// Arch names the syscall numbering the table uses.
const Arch = "x86_64"

// BucketSyscalls lists, in bucket order, the syscall each of buckets 0..62 stands for.
// Why these 63, in this order: see docs/FEATURES.md. In short, first every syscall that can
// put the caller to sleep (I/O, polling, futexes, sleeps, waits, yield), since they are what
// predicts that a running task is about to leave its CPU; then the most frequent non-blocking
// syscalls of server workloads, which tell compute and setup phases apart.
var BucketSyscalls = [OtherBucket]Syscall{
	// may block, sleep or yield
	{0, "read"}, {1, "write"}, {7, "poll"}, {23, "select"}, {270, "pselect6"}, {271, "ppoll"},
	{232, "epoll_wait"}, {281, "epoll_pwait"}, {441, "epoll_pwait2"}, {202, "futex"},
	{449, "futex_waitv"}, {35, "nanosleep"}, {230, "clock_nanosleep"}, {24, "sched_yield"},
	{34, "pause"}, {61, "wait4"}, {247, "waitid"}, {43, "accept"}, {288, "accept4"},
	{42, "connect"}, {44, "sendto"}, {45, "recvfrom"}, {46, "sendmsg"}, {47, "recvmsg"},
	{299, "recvmmsg"}, {307, "sendmmsg"}, {17, "pread64"}, {18, "pwrite64"}, {19, "readv"},
	{20, "writev"}, {40, "sendfile"}, {275, "splice"}, {74, "fsync"}, {75, "fdatasync"},
	{426, "io_uring_enter"}, {208, "io_getevents"}, {128, "rt_sigtimedwait"},
	// frequent, non-blocking
	{257, "openat"}, {3, "close"}, {5, "fstat"}, {262, "newfstatat"}, {332, "statx"},
	{8, "lseek"}, {9, "mmap"}, {10, "mprotect"}, {11, "munmap"}, {12, "brk"},
	{13, "rt_sigaction"}, {14, "rt_sigprocmask"}, {15, "rt_sigreturn"}, {16, "ioctl"},
	{28, "madvise"}, {233, "epoll_ctl"}, {72, "fcntl"}, {56, "clone"}, {435, "clone3"},
	{39, "getpid"}, {186, "gettid"}, {234, "tgkill"}, {318, "getrandom"}, {217, "getdents64"},
	{41, "socket"}, {54, "setsockopt"},
}

// Syscall is one x86_64 syscall number and its name.
type Syscall struct {
	Nr   uint16
	Name string
}

var (
	bucketOf [SyscallTableLen]uint8
	powTable [PowLen]uint32
	schemaID uint64
)

func init() {
	for i := range bucketOf {
		bucketOf[i] = OtherBucket
	}
	for b, sc := range BucketSyscalls {
		if int(sc.Nr) >= SyscallTableLen || bucketOf[sc.Nr] != OtherBucket {
			panic(fmt.Sprintf("features: bad or repeated syscall %d (%s) in bucket table", sc.Nr, sc.Name))
		}
		bucketOf[sc.Nr] = uint8(b)
	}
	// Integer recurrence, rounded: bit-identical on every machine, and what bpf/ is generated from.
	powTable[0] = 1 << PowShift
	for k := 1; k < PowLen; k++ {
		powTable[k] = uint32((uint64(powTable[k-1])*DecayNum + DecayDen/2) / DecayDen)
	}
	schemaID = computeSchemaID()
}

// Bucket returns the bucket of syscall number nr.
func Bucket(nr uint32) int {
	if nr >= SyscallTableLen {
		return OtherBucket
	}
	return int(bucketOf[nr])
}

// BucketName names bucket b: its syscall, or "other".
func BucketName(b int) string {
	if b >= 0 && b < OtherBucket {
		return BucketSyscalls[b].Name
	}
	return "other"
}

// BucketTable returns the full syscall -> bucket table, as the BPF code uses it.
func BucketTable() [SyscallTableLen]uint8 { return bucketOf }

// PowTable returns the decay power table: entry k is (63/64)^k in Q1.31.
func PowTable() [PowLen]uint32 { return powTable }

// SchemaID identifies this feature schema: a hash of the arch, the table and every constant.
// Traces and models record it; readers refuse another.
func SchemaID() uint64 { return schemaID }

func computeSchemaID() uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "mlsched-features/1 arch=%s buckets=%d fixed=%d decay=%d/%d pow=%d/%d table=%d\n",
		Arch, NumBuckets, FixedShift, DecayNum, DecayDen, PowShift, PowLen, SyscallTableLen)
	// Schema v2: the extras and their transforms.
	fmt.Fprintf(h, "v2 extras=%v ewma=%d vol=%d/%d/%d logtime=%d/%d/%d scale=%d\n", ExtraNames, EWMAShift,
		VolOne, VolUnknown, VolInputShift, LogTimeFrac, LogTimeUnitShift, uint64(LogTimeMaxNs), ExtraInputScale)
	// Pairs sorted by syscall number, so that the id depends on the mapping only.
	pairs := make([]int, 0, len(BucketSyscalls))
	for _, sc := range BucketSyscalls {
		pairs = append(pairs, int(sc.Nr))
	}
	sort.Ints(pairs)
	var buf [4]byte
	for _, nr := range pairs {
		binary.LittleEndian.PutUint16(buf[:2], uint16(nr))
		buf[2] = bucketOf[nr]
		h.Write(buf[:3])
	}
	return h.Sum64()
}

// FormatSchemaID prints a schema id the way every command shows it.
func FormatSchemaID(id uint64) string { return fmt.Sprintf("%016x", id) }

// CHeader renders the schema as the C header bpf/schema_table.h, so that the BPF code and Go
// share one source of truth. `make generate` writes it; a test checks it is up to date.
func CHeader() string {
	var b []byte
	b = fmt.Appendf(b, "// Code generated by bpf/internal/genschema from features/schema.go. DO NOT EDIT.\n")
	b = fmt.Appendf(b, "#pragma once\n\n#define MLS_SCHEMA_ID 0x%016xULL\n", schemaID)
	b = fmt.Appendf(b, "#define MLS_NUM_BUCKETS %d\n#define MLS_OTHER_BUCKET %d\n", NumBuckets, OtherBucket)
	b = fmt.Appendf(b, "#define MLS_FIXED_SHIFT %d\n#define MLS_FIXED_ONE %d\n", FixedShift, FixedOne)
	b = fmt.Appendf(b, "#define MLS_POW_SHIFT %d\n#define MLS_POW_LEN %d\n#define MLS_SC_TABLE_LEN %d\n",
		PowShift, PowLen, SyscallTableLen)
	b = fmt.Appendf(b, "#define MLS_NUM_EXTRAS %d\n#define MLS_NUM_INPUTS %d\n#define MLS_EWMA_SHIFT %d\n", NumExtras, NumInputs, EWMAShift)
	b = fmt.Appendf(b, "#define MLS_VOL_ONE %d\n#define MLS_VOL_UNKNOWN %d\n#define MLS_VOL_INPUT_SHIFT %d\n", VolOne, VolUnknown, VolInputShift)
	b = fmt.Appendf(b, "#define MLS_LOGT_FRAC %d\n#define MLS_LOGT_UNIT_SHIFT %d\n#define MLS_LOGT_MAX_NS %dULL\n\n",
		LogTimeFrac, LogTimeUnitShift, uint64(LogTimeMaxNs))
	b = fmt.Appendf(b, "static const volatile __u8 mls_sc_bucket[MLS_SC_TABLE_LEN] = {")
	for i, v := range bucketOf {
		if i%16 == 0 {
			b = append(b, "\n\t"...)
		}
		b = fmt.Appendf(b, "%d,", v)
	}
	b = fmt.Appendf(b, "\n};\n\n// (63/64)^k in Q1.%d\nstatic const volatile __u32 mls_pow[MLS_POW_LEN] = {", PowShift)
	for i, v := range powTable {
		if i%8 == 0 {
			b = append(b, "\n\t"...)
		}
		b = fmt.Appendf(b, "%du,", v)
	}
	b = append(b, "\n};\n"...)
	return string(b)
}
