package config

import (
	"fmt"
	"strings"
)

// lineIndex maps key paths (listen[0].address, worker[1].env, control) to the
// line where they are written. The TOML library reports lines only for
// syntax errors, so this small scanner follows table headers and key
// assignments itself. It runs only on text the TOML parser already accepted,
// which keeps it simple: it needs to understand headers, keys and the
// multi-line values it must skip, nothing else.
func lineIndex(src string) map[string]int {
	idx := map[string]int{}
	arrays := map[string]int{} // [[name]] → count seen so far
	table := ""                // current path prefix, e.g. "worker[1]"
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		n := i + 1
		switch {
		case line == "" || line[0] == '#':
		case strings.HasPrefix(line, "[["):
			name := normKey(strings.TrimSpace(line[2:strings.Index(line, "]]")]))
			table = fmt.Sprintf("%s[%d]", name, arrays[name])
			arrays[name]++
			idx[table] = n
		case line[0] == '[':
			table = normKey(strings.TrimSpace(line[1:strings.Index(line, "]")]))
			idx[table] = n
		default:
			eq := keyEnd(line)
			if eq < 0 {
				continue
			}
			key := normKey(strings.TrimSpace(line[:eq]))
			path := key
			if table != "" {
				path = table + "." + key
			}
			if _, seen := idx[path]; !seen {
				idx[path] = n
			}
			// Skip the continuation lines of a multi-line value.
			i += continuation(line[eq+1:], lines[i+1:])
		}
	}
	return idx
}

// keyEnd returns the index of the '=' ending a key, skipping quoted keys.
func keyEnd(line string) int {
	quote := byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		}
	}
	return -1
}

// normKey removes quotes and spaces around the parts of a dotted key.
func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// continuation counts the lines after the first one that a value starting
// with rest occupies: open brackets or braces, or an open triple-quoted string.
func continuation(rest string, next []string) int {
	depth, inTriple := scan(rest, 0, "")
	n := 0
	for (depth > 0 || inTriple != "") && n < len(next) {
		depth, inTriple = scan(next[n], depth, inTriple)
		n++
	}
	return n
}

// scan tracks bracket depth and triple-quoted strings across one line.
func scan(s string, depth int, triple string) (int, string) {
	for i := 0; i < len(s); i++ {
		if triple != "" {
			if strings.HasPrefix(s[i:], triple) {
				i += 2
				triple = ""
			}
			continue
		}
		switch c := s[i]; {
		case strings.HasPrefix(s[i:], `"""`) || strings.HasPrefix(s[i:], `'''`):
			triple = s[i : i+3]
			i += 2
		case c == '"' || c == '\'':
			// single-line string: skip to its end
			for j := i + 1; j < len(s); j++ {
				if c == '"' && s[j] == '\\' {
					j++
					continue
				}
				if s[j] == c {
					i = j
					break
				}
			}
		case c == '#':
			return depth, triple
		case c == '[' || c == '{':
			depth++
		case c == ']' || c == '}':
			depth--
		}
	}
	return depth, triple
}
