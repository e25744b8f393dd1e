package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Host programs in the VM: the kernel's example schedulers (built by fetch-peers.sh from the
// booted kernel's own source) and C workloads from the machine's packages (rt-tests'
// hackbench, stress-ng) go into a scenario's initramfs with the shared libraries ldd lists for
// them, at the same paths: the guest's dynamic loader finds them in its default directories.

// fetchPeers builds (or finds cached) scx_simple and scx_userland for the kernel in kernelDir;
// it returns their directory and the kernel source package they came from.
func fetchPeers(root, kernelDir string) (dir, source string, err error) {
	cmd := exec.Command(filepath.Join(root, "vmtest", "fetch-peers.sh"), kernelDir)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("vmtest/fetch-peers.sh: %v\n%s", err, tail(stderr.String(), 40))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir = lines[len(lines)-1]
	b, err := os.ReadFile(filepath.Join(dir, "source"))
	return dir, strings.TrimSpace(string(b)), err
}

// hostPrograms reads each program (guest path -> host path) and every shared library it
// needs, keyed by guest path.
func hostPrograms(progs map[string]string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for guest, host := range progs {
		data, err := os.ReadFile(host)
		if err != nil {
			return nil, err
		}
		files[guest] = data
		out, err := exec.Command("ldd", host).CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, fmt.Errorf("ldd %s: %v\n%s", host, err, out)
		}
		libs, err := parseLdd(string(out))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", host, err)
		}
		for _, lib := range libs {
			if _, ok := files[lib]; ok {
				continue
			}
			// A library path is often a symlink to the versioned file: the guest gets the
			// content under the name the loader looks for.
			if files[lib], err = os.ReadFile(lib); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

// parseLdd returns the files in ldd's output: "libz.so.1 => /lib/.../libz.so.1 (0x...)" and the
// loader's "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file. A library ldd cannot
// find is an error.
func parseLdd(out string) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("ldd: %s not found", f[0])
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}
