package features

import (
	"math"
	"os"
	"testing"
)

func TestBucketTable(t *testing.T) {
	if len(BucketSyscalls) != 63 {
		t.Fatalf("%d named buckets, want 63", len(BucketSyscalls))
	}
	names := map[string]bool{}
	for b, sc := range BucketSyscalls {
		if got := Bucket(uint32(sc.Nr)); got != b {
			t.Errorf("syscall %s (%d) in bucket %d, want %d", sc.Name, sc.Nr, got, b)
		}
		if names[sc.Name] {
			t.Errorf("syscall %s listed twice", sc.Name)
		}
		names[sc.Name] = true
		if BucketName(b) != sc.Name {
			t.Errorf("BucketName(%d) = %q, want %q", b, BucketName(b), sc.Name)
		}
	}
	// Syscalls without a bucket, and numbers past the table, go to "other".
	for _, nr := range []uint32{110 /* getppid */, 60 /* exit */, 511, 512, 1 << 20, ^uint32(0)} {
		if got := Bucket(nr); got != OtherBucket {
			t.Errorf("Bucket(%d) = %d, want %d", nr, got, OtherBucket)
		}
	}
	if BucketName(OtherBucket) != "other" {
		t.Errorf("last bucket is %q", BucketName(OtherBucket))
	}
	inTable := 0
	for _, b := range BucketTable() {
		if b != OtherBucket {
			inTable++
		}
	}
	if inTable != 63 {
		t.Errorf("%d table entries map to named buckets, want 63", inTable)
	}
}

// The schema id is part of every trace and model: it must not change unless the schema does.
// If this fails after a deliberate change of the table or constants, update the constant and
// say in the commit that older traces and models are refused.
func TestSchemaIDStable(t *testing.T) {
	const want = 0x51b8710249882b29 // schema v2 (the extras); v1 was 0x62d7ad77a3ebcaf9
	if got := SchemaID(); got != want {
		t.Fatalf("schema id %s, recorded %s: the feature schema changed", FormatSchemaID(got), FormatSchemaID(want))
	}
	if computeSchemaID() != SchemaID() {
		t.Fatal("schema id not deterministic")
	}
}

func TestSchemaIDCoversTable(t *testing.T) {
	saved := bucketOf
	defer func() { bucketOf = saved }()
	bucketOf[0], bucketOf[1] = bucketOf[1], bucketOf[0] // swap read and write
	if computeSchemaID() == SchemaID() {
		t.Fatal("schema id ignores the bucket table")
	}
}

// bpf/schema_table.h is generated from this package; it must be current.
func TestCHeaderUpToDate(t *testing.T) {
	got, err := os.ReadFile("../bpf/schema_table.h")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != CHeader() {
		t.Fatal("bpf/schema_table.h is stale: run 'make generate'")
	}
}

func TestPowTable(t *testing.T) {
	p := PowTable()
	if p[0] != 1<<PowShift {
		t.Fatalf("pow[0] = %d", p[0])
	}
	for k := 1; k < PowLen; k++ {
		if p[k] >= p[k-1] && p[k-1] != 0 {
			t.Fatalf("pow table not decreasing at %d", k)
		}
	}
	// The integer recurrence stays within a few units of the real power.
	for k := range p {
		want := math.Pow(float64(DecayNum)/DecayDen, float64(k)) * (1 << PowShift)
		if math.Abs(float64(p[k])-want) > float64(k)/2+1 {
			t.Fatalf("pow[%d] = %d, want %.0f", k, p[k], want)
		}
	}
}
