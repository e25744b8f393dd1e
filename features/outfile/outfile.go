// Package outfile writes every regular file mlsched produces (traces, models, reports, plots)
// without ever following a link someone else planted, and without leaving a half-written
// target behind.
//
// mlsched runs as root and users point its outputs at shared directories such as /tmp. A
// predictable temporary name (out.partial) or an open of the target itself follows a symbolic
// link planted by another user, so root would write wherever that link points. Here the data
// goes to a new file under a random name in the target's directory, created with O_EXCL (which
// never follows a link, dangling or not), then is synced and renamed over the target: a link at
// the target is replaced, not followed. Targets that are not regular files ("-" for stdout,
// /dev/null, a FIFO) are written directly and never renamed over.
//
// It lives under features/ because every package that writes files already imports features;
// it imports the standard library only (model/ depends on it).
package outfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Mode is the permission a new output gets before the umask: what os.Create gives, so that a
// trace captured with sudo stays readable by the user who asked for it.
const Mode = 0o644

// File is an output being written. Write to it, then Commit; Abort (safe after Commit, so it
// can be deferred) removes the temporary file and leaves the target as it was.
type File struct {
	f      *os.File
	std    io.Writer // the target "-": Stdout
	target string
	tmp    string // "" when the target is written directly
	done   bool
}

// Create starts writing path. Nothing is visible at path until Commit.
func Create(path string) (*File, error) {
	// "-", /dev/stdout, /dev/fd/N, /proc/self/fd/N: the descriptor this process already has, not a
	// name to open or rename over (with stdout redirected to a file, the link resolves to a
	// regular file, and a rename would replace the system's /dev/stdout).
	if fd, ok := fdTarget(path); ok {
		if fd == 1 {
			return &File{std: Stdout, target: path}, nil
		}
		nfd, err := syscall.Dup(fd)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		syscall.CloseOnExec(nfd)
		return &File{f: os.NewFile(uintptr(nfd), path), target: path}, nil
	}
	if direct, follow, err := writeDirectly(path); err != nil {
		return nil, err
	} else if direct {
		flags := os.O_WRONLY | syscall.O_CLOEXEC
		if !follow {
			flags |= syscall.O_NOFOLLOW // it was no link a moment ago: it must not become one
		}
		f, err := os.OpenFile(path, flags, 0)
		if err != nil {
			return nil, err
		}
		// The check above and this open are two steps: make sure the open did not land on a
		// regular file or a block device swapped in between.
		if st, err := f.Stat(); err != nil || st.Mode().IsRegular() || isBlockDevice(st) {
			f.Close()
			return nil, &fs.PathError{Op: "open", Path: path, Err: errors.New("changed into a regular file or a block device while being opened")}
		}
		return &File{f: f, target: path}, nil
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var last error
	for range 16 {
		tmp := filepath.Join(dir, "."+base+".tmp-"+randomSuffix())
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, Mode)
		if err == nil {
			// Replacing a file its owner kept private (a trace names the host and the
			// command): the new one is no more readable than the old (never more than Mode).
			if old, err := os.Lstat(path); err == nil && old.Mode().IsRegular() {
				if err := narrowMode(f, old.Mode().Perm()); err != nil {
					f.Close()
					os.Remove(tmp)
					return nil, fmt.Errorf("create %s: %w", path, err)
				}
			}
			return &File{f: f, target: path, tmp: tmp}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create %s: %w", path, unwrapPath(err))
		}
		last = err // someone holds that name (perhaps a planted link): pick another
	}
	return nil, fmt.Errorf("create %s: no free temporary name in %s: %w", path, dir, last)
}

// narrowMode takes from f (just created: Mode less the umask) every permission bit old lacks.
func narrowMode(f *os.File, old fs.FileMode) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if cur := st.Mode().Perm(); cur&old != cur {
		return f.Chmod(cur & old)
	}
	return nil
}

// writeDirectly says whether path names something that is not a regular file and must be
// written in place (a character device, a FIFO, a socket). A block device is refused: no output
// of mlsched belongs on a disk. A symbolic link is followed only when nobody else can have put
// it there (trustedLink: /dev/stdout, or a link of our own in a directory only we or root can
// change); any other link, and a link to a regular file, is replaced by the rename, never
// written through.
func writeDirectly(path string) (direct, follow bool, err error) {
	li, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	switch {
	case li.IsDir():
		return false, false, &fs.PathError{Op: "write", Path: path, Err: errors.New("is a directory")}
	case li.Mode().IsRegular():
		return false, false, nil
	case isBlockDevice(li):
		return false, false, &fs.PathError{Op: "write", Path: path, Err: errors.New("is a block device")}
	case li.Mode()&fs.ModeSymlink == 0:
		return true, false, nil // character device, FIFO, socket named directly
	}
	if !trustedLink(path, li) {
		return false, false, nil
	}
	ti, err := os.Stat(path)
	if err != nil {
		return false, false, nil // dangling: the rename replaces the link
	}
	if ti.IsDir() {
		return false, false, &fs.PathError{Op: "write", Path: path, Err: errors.New("is a link to a directory")}
	}
	if isBlockDevice(ti) {
		return false, false, &fs.PathError{Op: "write", Path: path, Err: errors.New("is a link to a block device")}
	}
	return !ti.Mode().IsRegular(), true, nil
}

// fdTarget: path names one of this process's descriptors, N: "-" (1), /dev/fd/N or
// /proc/self/fd/N, or a trusted link to one of those (/dev/stdout, /dev/stderr).
func fdTarget(path string) (int, bool) {
	if path == "-" {
		return 1, true
	}
	name := path
	if li, err := os.Lstat(path); err == nil && li.Mode()&fs.ModeSymlink != 0 && trustedLink(path, li) {
		if t, err := os.Readlink(path); err == nil {
			name = t
		}
	}
	for _, prefix := range []string{"/dev/fd/", "/proc/self/fd/"} {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			if n, err := strconv.Atoi(rest); err == nil && n >= 0 && strconv.Itoa(n) == rest {
				return n, true
			}
		}
	}
	return 0, false
}

// IsStdout: path writes to this process's standard output ("-", /dev/stdout, /dev/fd/1).
func IsStdout(path string) bool {
	fd, ok := fdTarget(path)
	return ok && fd == 1
}

// InPlace: path is written where it is, not renamed over ("-", a descriptor, a device, a
// FIFO, a trusted link to one of those): two outputs may name it.
func InPlace(path string) bool {
	if _, ok := fdTarget(path); ok {
		return true
	}
	direct, _, err := writeDirectly(path)
	return err == nil && direct
}

// trustedLink: the link belongs to us or to root, and its directory belongs to us or to root
// and is not writable by others, or is sticky (where others cannot replace our link). A link
// that another user owns, or could swap, is never followed: as root, following it would write
// wherever that user points it.
func trustedLink(path string, li fs.FileInfo) bool {
	lst, ok := li.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	us := uint32(os.Geteuid())
	if lst.Uid != us && lst.Uid != 0 {
		return false
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return false
	}
	dst, ok := di.Sys().(*syscall.Stat_t)
	if !ok || dst.Uid != us && dst.Uid != 0 {
		return false
	}
	return di.Mode().Perm()&0o022 == 0 || di.Mode()&fs.ModeSticky != 0
}

func isBlockDevice(fi fs.FileInfo) bool {
	return fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0
}

// randomSuffix names temporary files (a variable so that a test can make it predictable).
var randomSuffix = func() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Stdout is where the target "-" goes (a command's own standard output; tests set it).
var Stdout io.Writer = os.Stdout

// Write writes to the temporary file (or the direct target).
func (o *File) Write(p []byte) (int, error) {
	if o.std != nil {
		return o.std.Write(p)
	}
	return o.f.Write(p)
}

// Name is where the bytes go until Commit: the temporary file, or the target written directly.
func (o *File) Name() string {
	if o.tmp != "" {
		return o.tmp
	}
	return o.target
}

// Target is the path the output is for.
func (o *File) Target() string { return o.target }

// Commit syncs the data and renames it into place. After an error the target is as it was and
// the temporary file is gone, unless only the rename failed: then the whole, synced output
// stays in the temporary file, which the error names.
func (o *File) Commit() error {
	if o.done {
		return errors.New("outfile: commit after commit or abort")
	}
	o.done = true
	if o.std != nil {
		return nil
	}
	if o.tmp == "" {
		if err := o.f.Close(); err != nil {
			return fmt.Errorf("write %s: %w", o.target, err)
		}
		return nil
	}
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(o.tmp)
		return fmt.Errorf("write %s: %w", o.target, unwrapPath(err))
	}
	if err = os.Rename(o.tmp, o.target); err != nil {
		// The data is whole and synced: only its name is wrong. Keep it where it is.
		return fmt.Errorf("write %s: %w (the complete output is kept in %s)", o.target, unwrapPath(err), o.tmp)
	}
	syncDir(filepath.Dir(o.target))
	return nil
}

// Abort drops the output: the temporary file is removed and the target left as it was. It
// does nothing after Commit.
func (o *File) Abort() {
	if o.done {
		return
	}
	o.done = true
	if o.std != nil {
		return
	}
	o.f.Close()
	if o.tmp != "" {
		os.Remove(o.tmp)
	}
}

// Truncate cuts what was written back to its first size bytes and goes on writing from
// there (a capture ending its trace after a failed write). Only a file of its own can be cut:
// a target written in place (stdout, a pipe, a device) gives an error.
func (o *File) Truncate(size int64) error {
	if o.std != nil || o.tmp == "" {
		return fmt.Errorf("cannot cut %s back: it is written in place", o.target)
	}
	if err := o.f.Truncate(size); err != nil {
		return err
	}
	_, err := o.f.Seek(size, io.SeekStart)
	return err
}

// Keep ends the output without putting it in place, after an error part-way: what was written
// stays in the temporary file (a trace's complete blocks stay readable there), and Keep returns
// its name; "" when nothing is left to keep (the output went to a descriptor or a device, or
// it was already committed or aborted).
func (o *File) Keep() string {
	if o.done {
		return ""
	}
	o.done = true
	if o.std != nil {
		return ""
	}
	o.f.Close()
	return o.tmp
}

// syncDir makes the rename durable; a failure only weakens durability, so it is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// WriteWith writes path through write, all or nothing.
func WriteWith(path string, write func(io.Writer) error) error {
	o, err := Create(path)
	if err != nil {
		return err
	}
	defer o.Abort()
	if err := write(o); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return o.Commit()
}

// WriteFile writes data to path, all or nothing.
func WriteFile(path string, data []byte) error {
	return WriteWith(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// CheckWritable fails unless an output could be written at path now: its directory takes a
// new file and path is not a directory. It leaves nothing behind and follows no link. A target
// written in place (a FIFO, /dev/stdout) is not opened: opening and closing a FIFO would give
// its reader an end of file before the output exists.
func CheckWritable(path string) error {
	if path == "-" {
		return nil // Stdout (a variable: not necessarily descriptor 1)
	}
	if fd, ok := fdTarget(path); ok {
		if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0); errno != 0 {
			return &fs.PathError{Op: "write", Path: path, Err: errno}
		}
		return nil
	}
	direct, _, err := writeDirectly(path)
	if err != nil {
		return err
	}
	if direct {
		if err := syscall.Access(path, 2 /* W_OK */); err != nil {
			return &fs.PathError{Op: "write", Path: path, Err: err}
		}
		return nil
	}
	o, err := Create(path)
	if err != nil {
		return err
	}
	o.Abort()
	return nil
}
