package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
)

// Environment variables read by the package.
const (
	// EnvSeed overrides the seed of the chaos schedule (a decimal uint64).
	EnvSeed = "HOLDFAST_E2E_SEED"
	// EnvReport names a JSON file that receives each chaos test's summary.
	EnvReport = "HOLDFAST_E2E_REPORT"
	// EnvLogDir names a directory that keeps the children's stderr logs and
	// the broker's log after the test (default: the test's temp dir).
	EnvLogDir = "HOLDFAST_E2E_LOGDIR"
)

// soak, when positive, replaces the default length of the chaos phase.
var soak = flag.Duration("holdfast.soak", 0, "length of the chaos phase of the e2e chaos tests (default 60s); e.g. -holdfast.soak=10m")

// binDir holds the child programs built for this test run.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "holdfast-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := leakcheck.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// builds caches the child programs: each is built once per test run.
var builds struct {
	sync.Mutex
	paths map[string]string // package path -> binary
	errs  map[string]error
}

// Child programs, and the module of the examples (examples/go.mod).
const (
	examplesModule = "github.com/holdfast-mqtt/holdfast/examples"
	pkgTelemetry   = "github.com/holdfast-mqtt/holdfast/examples/telemetry"
	pkgBarePaho    = "github.com/holdfast-mqtt/holdfast/internal/cmd/barepaho"
)

// buildChild builds the main package pkg of this repository (without -race:
// the children run at full speed) and returns the binary's path. It fails
// the test if the build fails.
func buildChild(t testing.TB, pkg string) string {
	t.Helper()
	path, err := tryBuild(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// tryBuild builds pkg once per test run; later calls return the first result.
func tryBuild(pkg string) (string, error) {
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[pkg]; ok {
		return p, builds.errs[pkg]
	}
	if builds.paths == nil {
		builds.paths, builds.errs = map[string]string{}, map[string]error{}
	}
	out := filepath.Join(binDir, filepath.Base(pkg))
	root, err := filepath.Abs(filepath.Join("..", "..")) // the module root, from internal/e2e
	if err == nil {
		started := time.Now()
		cmd := exec.Command(goTool(), "build", "-o", out, pkg)
		cmd.Dir = root
		if strings.HasPrefix(pkg, examplesModule+"/") {
			// The examples are a module of their own: build from its
			// directory, so that it works with and without go.work.
			cmd.Dir = filepath.Join(root, "examples")
		}
		var msg []byte
		if msg, err = cmd.CombinedOutput(); err != nil {
			err = fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		} else if d := time.Since(started); d > 10*time.Second {
			fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", pkg, d.Round(time.Second))
		}
	}
	builds.paths[pkg], builds.errs[pkg] = out, err
	return out, err
}

// goTool returns the go command of the toolchain running the tests.
func goTool() string {
	//lint:ignore SA1019 the GOROOT of the running toolchain is what we want.
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}
