package outfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// onlyFiles lists dir's entries: a test's directory must hold nothing but what it expects.
func onlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

func TestWriteFileNewAndReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	if err := WriteFile(p, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "two" {
		t.Errorf("content %q", got)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 (0644 less umask 022)", st.Mode().Perm())
	}
	syscall.Umask(0o027)
	if err := WriteFile(p, []byte("three")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v under umask 027, want 0640", st.Mode().Perm())
	}
	onlyFiles(t, dir, "out")
}

// A failed write leaves the old target and no temporary file.
func TestWriteWithFailureKeepsTarget(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	os.WriteFile(p, []byte("precious"), 0o644)
	boom := errors.New("boom")
	err := WriteWith(p, func(w0 io.Writer) error {
		w0.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if got := readFile(t, p); got != "precious" {
		t.Errorf("target changed to %q", got)
	}
	onlyFiles(t, dir, "out")

	o, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	o.Write([]byte("abandoned"))
	if !strings.HasPrefix(filepath.Base(o.Name()), ".out.tmp-") {
		t.Errorf("temporary name %s", o.Name())
	}
	o.Abort()
	o.Abort()
	if o.Commit() == nil {
		t.Error("commit after abort succeeded")
	}
	if got := readFile(t, p); got != "precious" {
		t.Errorf("target changed to %q", got)
	}
	onlyFiles(t, dir, "out")
}

// A link at the target is replaced, not written through; a link at the first temporary name
// is skipped.
func TestLinksAreNeverFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	p := filepath.Join(dir, "out")
	os.Symlink(victim, p)
	names := []string{"aaaa", "bbbb"}
	defer func(f func() string) { randomSuffix = f }(randomSuffix)
	randomSuffix = func() string { s := names[0]; names = names[1:]; return s }
	os.Symlink(victim, filepath.Join(dir, ".out.tmp-aaaa"))
	if err := WriteFile(p, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, victim); got != "precious" {
		t.Errorf("victim now %q", got)
	}
	if li, _ := os.Lstat(p); !li.Mode().IsRegular() || readFile(t, p) != "data" {
		t.Errorf("target %v, %q: want a regular file with the data", li.Mode(), readFile(t, p))
	}
	onlyFiles(t, dir, ".out.tmp-aaaa", "out", "victim")
}

// Non-regular targets are written in place and never replaced.
func TestNonRegularTargets(t *testing.T) {
	if err := WriteFile("/dev/null", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat("/dev/null"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a device: %v %v", st.Mode(), err)
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	got := make(chan []byte)
	go func() {
		f, _ := os.Open(fifo)
		var b bytes.Buffer
		b.ReadFrom(f)
		f.Close()
		got <- b.Bytes()
	}()
	if err := WriteFile(fifo, []byte("through the fifo")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "through the fifo" {
		t.Errorf("reader got %q", b)
	}
	if st, _ := os.Lstat(fifo); st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo replaced by %v", st.Mode())
	}
	// Our own link to a device is followed (like /dev/stdout).
	link := filepath.Join(dir, "null")
	os.Symlink("/dev/null", link)
	if err := WriteFile(link, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if li, _ := os.Lstat(link); li.Mode()&os.ModeSymlink == 0 {
		t.Errorf("our link to /dev/null was replaced by %v", li.Mode())
	}
	onlyFiles(t, dir, "fifo", "null")
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir, []byte("x")); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory target: %v", err)
	}
	if err := CheckWritable(filepath.Join(dir, "missing", "out")); err == nil {
		t.Error("missing directory accepted")
	}
	if err := CheckWritable(filepath.Join(dir, "ok")); err != nil {
		t.Error(err)
	}
	onlyFiles(t, dir)
}

// A link that another user planted in a directory of theirs is replaced, even when it points
// at a device: as root, following it would write wherever that user aims it (a disk).
func TestOthersLinkIsReplaced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to another user)")
	}
	const nobody = 65534
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "m.bin")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{os.Lchown(link, nobody, nobody), os.Chown(dir, nobody, nobody)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFile(link, []byte("model")); err != nil {
		t.Fatal(err)
	}
	if li, err := os.Lstat(link); err != nil || !li.Mode().IsRegular() || readFile(t, link) != "model" {
		t.Errorf("their link: now %v (%v), want a regular file with the data", li.Mode(), err)
	}
	if st, err := os.Stat("/dev/null"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a device: %v %v", st.Mode(), err)
	}
}

// A block device is never written, named directly or through our own link; the check runs
// before any open (the node's device number names no device, so a regression would fail to
// open rather than write a disk).
func TestBlockDeviceRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod)")
	}
	dir := t.TempDir()
	blk := filepath.Join(dir, "disk")
	if err := syscall.Mknod(blk, syscall.S_IFBLK|0o600, int(240<<8|255)); err != nil {
		t.Skip("mknod:", err)
	}
	link := filepath.Join(dir, "to-disk")
	os.Symlink(blk, link)
	for _, p := range []string{blk, link} {
		if err := WriteFile(p, []byte("x")); err == nil || !strings.Contains(err.Error(), "block device") {
			t.Errorf("%s: %v, want a refusal naming the block device", p, err)
		}
		if err := CheckWritable(p); err == nil || !strings.Contains(err.Error(), "block device") {
			t.Errorf("CheckWritable(%s): %v, want a refusal naming the block device", p, err)
		}
	}
	onlyFiles(t, dir, "disk", "to-disk")
}

// Checking a FIFO target does not open it: an open would block until a reader comes and then
// hand that reader an end of file before the output exists.
func TestCheckWritableLeavesFIFOClosed(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	done := make(chan error, 1)
	go func() { done <- CheckWritable(fifo) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CheckWritable opened the FIFO and blocks waiting for a reader")
	}
}

// A descriptor named by path (/dev/fd/N, or a link to /proc/self/fd/N such as /dev/stdout) is
// written through the descriptor this process has: never opened again by name, and the link
// never renamed over, also when the descriptor is a regular file (stdout redirected to one).
func TestDescriptorTargets(t *testing.T) {
	dir := t.TempDir()
	reg, err := os.Create(filepath.Join(dir, "redirected"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	link := filepath.Join(dir, "stdout")
	os.Symlink(fmt.Sprintf("/proc/self/fd/%d", reg.Fd()), link)
	if err := CheckWritable(link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(link, []byte("model")); err != nil {
		t.Fatal(err)
	}
	if li, _ := os.Lstat(link); li.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link to a descriptor was replaced by %v", li.Mode())
	}
	if got := readFile(t, reg.Name()); got != "model" {
		t.Errorf("the descriptor's file holds %q, want the data", got)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := WriteFile(fmt.Sprintf("/dev/fd/%d", w.Fd()), []byte("piped")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if b, _ := io.ReadAll(r); string(b) != "piped" {
		t.Errorf("pipe got %q", b)
	}
	var buf bytes.Buffer
	defer func(s io.Writer) { Stdout = s }(Stdout)
	Stdout = &buf
	if err := WriteFile("/dev/stdout", []byte("out")); err != nil || buf.String() != "out" {
		t.Errorf("/dev/stdout: %v, Stdout got %q", err, buf.String())
	}
	if !IsStdout("/dev/stdout") || !IsStdout("-") || IsStdout(link) {
		t.Error("IsStdout")
	}
	onlyFiles(t, dir, "redirected", "stdout")
}

// Our own link is followed only where nobody else can swap it: in a directory others may
// write to it is replaced; in a sticky one (others cannot remove our link) it is followed.
func TestTrustedLinkDirectory(t *testing.T) {
	for _, c := range []struct {
		mode   os.FileMode
		follow bool
	}{{0o700, true}, {0o777, false}, {0o777 | os.ModeSticky, true}} {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, c.mode); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "null")
		os.Symlink("/dev/null", link)
		if err := WriteFile(link, []byte("x")); err != nil {
			t.Fatal(err)
		}
		li, _ := os.Lstat(link)
		if followed := li.Mode()&os.ModeSymlink != 0; followed != c.follow {
			t.Errorf("directory %v: link followed %v, want %v", c.mode, followed, c.follow)
		}
	}
}

// Keep leaves what was written in the temporary file and names it; after Commit or Abort there
// is nothing to keep.
func TestKeep(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "x.trace")
	o, err := Create(target)
	if err != nil {
		t.Fatal(err)
	}
	o.Write([]byte("partial"))
	kept := o.Keep()
	if b, err := os.ReadFile(kept); err != nil || string(b) != "partial" || filepath.Dir(kept) != dir {
		t.Fatalf("kept %q: %q, %v", kept, b, err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target exists after Keep: %v", err)
	}
	o.Abort() // a no-op now
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("Abort after Keep removed the kept file: %v", err)
	}
	o2, _ := Create(filepath.Join(dir, "y"))
	o2.Commit()
	if got := o2.Keep(); got != "" {
		t.Errorf("Keep after Commit: %q", got)
	}
}

// A rename that fails (the target's name is a directory here) keeps the whole output in the
// temporary file and says where.
func TestCommitRenameFailureKeepsData(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "busy")
	o, err := Create(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(target, 0o755); err != nil { // appears while the output is written
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "f"), nil, 0o644); err != nil { // non-empty: no rename over it
		t.Fatal(err)
	}
	o.Write([]byte("whole"))
	err = o.Commit()
	if err == nil || !strings.Contains(err.Error(), "kept in "+o.Name()) {
		t.Fatalf("commit over a directory: %v", err)
	}
	if b, err := os.ReadFile(o.Name()); err != nil || string(b) != "whole" {
		t.Fatalf("kept file: %q, %v", b, err)
	}
}

// Replacing a private file leaves it private: the new output is no more readable than the file
// it replaces (and never more than Mode).
func TestReplaceKeepsPrivateMode(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ old, want os.FileMode }{{0o600, 0o600}, {0o640, 0o640}, {0o666, Mode}, {0o400, 0o400}} {
		target := filepath.Join(dir, fmt.Sprintf("f%o", c.old))
		if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(target, c.old)
		if err := WriteFile(target, []byte("new")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(target)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want&^umask() {
			t.Errorf("replacing a %o file: %o, want %o", c.old, got, c.want&^umask())
		}
	}
}

func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}
