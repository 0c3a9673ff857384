//go:build linux

package outbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimMappings asks the kernel to page out the resident pages of Badger's
// memory-mapped value-log and table files in dir (MADV_PAGEOUT). Badger keeps
// every such file mapped, so pages written or read once stay in the
// process's RSS until memory gets tight. They are clean page cache, so this
// costs only a re-read if they are needed again. Advice, not an unmap: if a
// range was remapped meanwhile the advice is harmless, since anonymous memory
// without swap is never paged out and with swap it is swapped, not lost.
// Returns false when the kernel does not support it (before Linux 5.4).
func trimMappings(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return true
	}
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return true
	}
	prefix := abs + string(filepath.Separator)
	type mapping struct {
		lo, hi uint64
		vlog   int // value-log file number, -1 for tables
	}
	var maps []mapping
	newest := -1 // the newest value-log file stays: it is being written, and read by a reader keeping up
	for _, line := range strings.Split(string(data), "\n") {
		// start-end perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], prefix) {
			continue
		}
		if !strings.HasSuffix(f[5], ".vlog") && !strings.HasSuffix(f[5], ".sst") {
			continue
		}
		start, end, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(start, 16, 64)
		hi, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil || hi <= lo {
			continue
		}
		m := mapping{lo, hi, -1}
		if base := filepath.Base(f[5]); strings.HasSuffix(base, ".vlog") {
			n, err := strconv.Atoi(strings.TrimSuffix(base, ".vlog"))
			if err != nil {
				continue
			}
			m.vlog = n
			newest = max(newest, n)
		}
		maps = append(maps, m)
	}
	for _, m := range maps {
		if m.vlog >= 0 && m.vlog == newest {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(m.lo), uintptr(m.hi-m.lo), unix.MADV_PAGEOUT)
		if errno == unix.EINVAL {
			return false
		}
	}
	return true
}
