package config

import (
	"fmt"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lineIndex maps key paths, as the reader names them (listen[0].address,
// worker[1].env.APP, control), to the line where each is written: the TOML
// decoder reports lines only for syntax errors. It walks go-toml's parse
// tree, which gives every key its place in src. A table defined only
// implicitly (worker[0].env by env.APP = "x") gets the line of its first key.
// On text the parser rejects it returns the lines found up to the error;
// the decoder reports the error itself.
func lineIndex(src string) map[string]int {
	ix := indexer{lines: map[string]int{}, arrays: map[string]int{}}
	ix.p.Reset([]byte(src))
	table := ""
	for ix.p.NextExpression() {
		e := ix.p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = ix.header(e)
		case unstable.KeyValue:
			ix.keyValue(table, e)
		}
	}
	return ix.lines
}

type indexer struct {
	p      unstable.Parser
	lines  map[string]int
	arrays map[string]int // path of an array of tables → its elements so far
}

// line returns the line a node starts on, or 0 for nodes without a place
// in the text (arrays have none; their elements do).
func (ix *indexer) line(n *unstable.Node) int {
	if n.Raw.Length == 0 {
		return 0
	}
	return ix.p.Shape(n.Raw).Start.Line
}

// set records the first line of path.
func (ix *indexer) set(path string, line int) {
	if _, seen := ix.lines[path]; !seen && line > 0 {
		ix.lines[path] = line
	}
}

// header handles [a.b] and [[a.b]] and returns the path of the table it
// opens. A key that names an array of tables refers to its last element, so
// [worker.env] after the second [[worker]] is worker[1].env.
func (ix *indexer) header(e *unstable.Node) string {
	path := ""
	it := e.Key()
	for it.Next() {
		k := it.Node()
		path = join(path, string(k.Data))
		line := ix.line(k)
		if e.Kind == unstable.ArrayTable && it.IsLast() {
			n := ix.arrays[path]
			ix.arrays[path] = n + 1
			ix.set(path, line)
			path = fmt.Sprintf("%s[%d]", path, n)
		} else if n, ok := ix.arrays[path]; ok {
			path = fmt.Sprintf("%s[%d]", path, n-1)
		}
		ix.set(path, line)
	}
	return path
}

// keyValue records a possibly dotted key and, inside its value, the keys of
// inline tables, also in arrays.
func (ix *indexer) keyValue(table string, kv *unstable.Node) {
	path := table
	it := kv.Key()
	for it.Next() {
		k := it.Node()
		path = join(path, string(k.Data))
		ix.set(path, ix.line(k))
	}
	ix.value(path, kv.Value())
}

func (ix *indexer) value(path string, v *unstable.Node) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			ix.keyValue(path, it.Node())
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			elem := fmt.Sprintf("%s[%d]", path, i)
			ix.set(elem, ix.line(it.Node()))
			ix.value(elem, it.Node())
			i++
		}
	}
}
