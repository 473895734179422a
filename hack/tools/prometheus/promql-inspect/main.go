// Command promql-inspect reads what the monitoring tests compare, with Prometheus's own code
// (the module version promtool is built from), so that the check sees queries and scrapes
// exactly as a Prometheus server would:
//
//	promql-inspect exprs                 stdin: a JSON array of PromQL expressions
//	promql-inspect exposition MEDIATYPE  stdin: a /metrics body served with that Content-Type
//
// `exprs` prints, per expression, the vector selectors it contains (metric name and label
// matchers) and every label name it groups or matches by, or the parse error. `exposition`
// prints every sample of the scrape as its metric name and labels. Output is JSON on stdout.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Label string `json:"label"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type selector struct {
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers"`
}

type exprInfo struct {
	Expr      string     `json:"expr"`
	Error     string     `json:"error,omitempty"`
	Selectors []selector `json:"selectors"`
	// Label names the expression groups, matches, joins or sorts by: each must exist on the
	// series it applies to, or the result silently loses them.
	Labels []string `json:"labels"`
}

type sample struct {
	Metric string            `json:"metric"`
	Labels map[string]string `json:"labels"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: promql-inspect exprs | exposition MEDIATYPE")
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var out any
	switch os.Args[1] {
	case "exprs":
		out, err = inspectExprs(input)
	case "exposition":
		if len(os.Args) != 3 {
			fail("usage: promql-inspect exposition MEDIATYPE")
		}
		out, err = parseExposition(input, os.Args[2])
	default:
		fail("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail("%v", err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		fail("writing: %v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "promql-inspect: "+format+"\n", args...)
	os.Exit(2)
}

func inspectExprs(input []byte) ([]exprInfo, error) {
	var exprs []string
	if err := json.Unmarshal(input, &exprs); err != nil {
		return nil, fmt.Errorf("stdin is not a JSON array of strings: %w", err)
	}
	p := parser.NewParser(parser.Options{})
	infos := make([]exprInfo, 0, len(exprs))
	for _, text := range exprs {
		info := exprInfo{Expr: text, Selectors: []selector{}, Labels: []string{}}
		expr, err := p.ParseExpr(text)
		if err != nil {
			info.Error = err.Error()
			infos = append(infos, info)
			continue
		}
		seen := map[string]bool{}
		addLabels := func(names ...string) {
			for _, n := range names {
				if n != "" && !seen[n] {
					seen[n] = true
					info.Labels = append(info.Labels, n)
				}
			}
		}
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			switch n := node.(type) {
			case *parser.VectorSelector:
				s := selector{Metric: n.Name, Matchers: []matcher{}}
				for _, m := range n.LabelMatchers {
					if m.Name == labels.MetricName {
						continue
					}
					s.Matchers = append(s.Matchers, matcher{Label: m.Name, Type: m.Type.String(), Value: m.Value})
				}
				info.Selectors = append(info.Selectors, s)
			case *parser.AggregateExpr:
				addLabels(n.Grouping...)
				if n.Op == parser.COUNT_VALUES {
					if s, ok := n.Param.(*parser.StringLiteral); ok {
						addLabels(s.Val)
					}
				}
			case *parser.BinaryExpr:
				if n.VectorMatching != nil {
					addLabels(n.VectorMatching.MatchingLabels...)
					addLabels(n.VectorMatching.Include...)
				}
			case *parser.Call:
				addLabels(callLabels(n)...)
			}
			return nil
		})
		sort.Strings(info.Labels)
		infos = append(infos, info)
	}
	return infos, nil
}

// callLabels are the source label names a function reads (not the ones it writes).
func callLabels(c *parser.Call) []string {
	str := func(i int) string {
		if i < len(c.Args) {
			if s, ok := c.Args[i].(*parser.StringLiteral); ok {
				return s.Val
			}
		}
		return ""
	}
	var out []string
	switch c.Func.Name {
	case "label_replace":
		out = append(out, str(4))
	case "label_join":
		for i := 3; i < len(c.Args); i++ {
			out = append(out, str(i))
		}
	case "sort_by_label", "sort_by_label_desc":
		for i := 1; i < len(c.Args); i++ {
			out = append(out, str(i))
		}
	}
	return out
}

func parseExposition(body []byte, mediaType string) ([]sample, error) {
	p, err := textparse.New(body, mediaType, labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		return nil, fmt.Errorf("no parser for %q: %w", mediaType, err)
	}
	samples := []sample{}
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			return samples, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the exposition: %w", err)
		}
		if entry != textparse.EntrySeries && entry != textparse.EntryHistogram {
			continue
		}
		var ls labels.Labels
		p.Labels(&ls)
		s := sample{Labels: map[string]string{}}
		ls.Range(func(l labels.Label) {
			if l.Name == labels.MetricName {
				s.Metric = l.Value
			} else {
				s.Labels[l.Name] = l.Value
			}
		})
		samples = append(samples, s)
	}
}
