package config_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chorus-rt/chorus/internal/config"
)

// docsPath is the document whose configuration table must list every setting.
const docsPath = "../../README.md"

// examplePath is the document whose YAML example must load and validate.
const examplePath = "../../docs/configuration.md"

const (
	tableStart = "<!-- settings table"
	tableEnd   = "<!-- end of settings table -->"
)

var update = flag.Bool("update", false, "rewrite the settings table in "+docsPath+" from config.Table")

// TestDocs fails if the documented configuration table misses a setting or
// shows a stale default. Run with -update to regenerate the table.
func TestDocs(t *testing.T) {
	if *update {
		updateDocs(t)
	}
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(line, "|") {
			rows = append(rows, line)
		}
	}
	for _, s := range config.Table() {
		id := docID(s)
		row := ""
		for _, r := range rows {
			if strings.Contains(r, id) {
				row = r
				break
			}
		}
		if row == "" {
			t.Errorf("%s has no row in the table in %s; run go test ./internal/config -run TestDocs -update", id, docsPath)
			continue
		}
		if cell := docDefault(s); !strings.Contains(row, cell) {
			t.Errorf("the row for %s in %s does not show the default %s", id, docsPath, cell)
		}
	}
}

// TestDocsExample loads the YAML example in the docs so it cannot rot.
func TestDocsExample(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatalf("%s has no ```yaml example", examplePath)
	}
	path := filepath.Join(t.TempDir(), "example.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load([]string{"-config", path}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Load(example): %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("example does not validate: %v", err)
	}
}

// docID is the cell that identifies a setting's row: its env name where it
// has one, as the README's table must list every env name.
func docID(s config.Setting) string {
	switch {
	case s.Env != "":
		return "`" + s.Env + "`"
	case s.Flag != "":
		return "`-" + s.Flag + "`"
	}
	return "`" + s.Key + "`"
}

func docDefault(s config.Setting) string {
	if s.Default == "" {
		return "(empty)"
	}
	return "`" + s.Default + "`"
}

func updateDocs(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i := strings.Index(doc, tableStart)
	j := strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the %q ... %q markers", docsPath, tableStart, tableEnd)
	}
	i += strings.Index(doc[i:], "\n") + 1 // keep the start marker line

	code := func(s string) string {
		if s == "" {
			return "—"
		}
		return "`" + s + "`"
	}
	var b strings.Builder
	b.WriteString("| flag | env | default | meaning |\n|---|---|---|---|\n")
	for _, s := range config.Table() {
		flagCell := "—"
		switch {
		case s.Flag != "":
			flagCell = code("-" + s.Flag)
		case s.Env == "":
			flagCell = code(s.Key) + " (file only)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", flagCell, code(s.Env), docDefault(s), s.Help)
	}
	doc = doc[:i] + b.String() + doc[j:]
	if err := os.WriteFile(docsPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}
