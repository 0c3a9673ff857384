package leakcheck

import (
	"bufio"
	"bytes"
	"runtime"
	"strconv"
	"strings"
)

// goroutine is one goroutine of a runtime.Stack dump.
type goroutine struct {
	id    int
	state string          // "chan receive", "select", "IO wait", ...
	top   string          // the function at the top of the stack
	funcs map[string]bool // every function on the stack (not its creator)
	text  string          // the goroutine's part of the dump
}

func (g goroutine) has(fn string) bool { return g.funcs[fn] }

// dump returns the stacks of every goroutine (all) or of the caller's.
func dump(all bool) []byte {
	for n := 64 << 10; ; n *= 2 {
		buf := make([]byte, n)
		if m := runtime.Stack(buf, all); m < n {
			return buf[:m]
		}
	}
}

// goroutines parses a runtime.Stack dump. A goroutine's part begins with
// "goroutine ID [STATE...]:" and lists a function line, then its file line
// (which begins with a tab), for each frame; "created by F in goroutine N"
// names the creator, which is not on the stack.
func goroutines(b []byte) []goroutine {
	var (
		gs   []goroutine
		cur  *goroutine
		text strings.Builder
	)
	end := func() {
		if cur != nil {
			cur.text = text.String()
			gs = append(gs, *cur)
			cur = nil
		}
		text.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), len(b)+1)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "goroutine "); ok && strings.HasSuffix(line, ":") {
			end()
			g, ok := header(rest)
			if !ok {
				continue
			}
			cur = &g
			text.WriteString(line)
			text.WriteByte('\n')
			continue
		}
		if cur == nil {
			continue
		}
		text.WriteString(line)
		text.WriteByte('\n')
		if line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by ") ||
			strings.HasPrefix(line, "[originating from") || strings.HasPrefix(line, "...") {
			continue
		}
		fn := line
		if i := strings.LastIndexByte(line, '('); i > 0 {
			fn = line[:i]
		}
		cur.funcs[fn] = true
		if cur.top == "" {
			cur.top = fn
		}
	}
	end()
	return gs
}

// header parses "ID [STATE, more]:" (what follows "goroutine ").
func header(s string) (goroutine, bool) {
	idText, rest, ok := strings.Cut(s, " ")
	id, err := strconv.Atoi(idText)
	if !ok || err != nil {
		return goroutine{}, false
	}
	state := ""
	if i, j := strings.IndexByte(rest, '['), strings.LastIndexByte(rest, ']'); i >= 0 && j > i {
		state = rest[i+1 : j]
	}
	if i := strings.IndexByte(state, ','); i >= 0 {
		state = state[:i]
	}
	return goroutine{id: id, state: state, funcs: map[string]bool{}}, true
}

// currentID returns the caller's goroutine ID.
func currentID() int {
	gs := goroutines(dump(false))
	if len(gs) == 0 {
		return -1
	}
	return gs[0].id
}
