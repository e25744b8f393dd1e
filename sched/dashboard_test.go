package sched

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// dashboardPath is the Grafana dashboard shipped for the metrics of `mlsched run`.
const dashboardPath = "../dist/grafana-mlsched.json"

// TestDashboardMetrics: every metric the dashboard queries (panels and template variables) is
// one `mlsched run` registers, with the suffixes its type allows, and every exact label
// matcher names a label and value that the metric has. A renamed metric or label value
// breaks this test, not the operator's dashboard.
func TestDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	exprs := dashboardExprs(dash)
	if len(exprs) < 10 {
		t.Fatalf("found only %d queries in %s", len(exprs), dashboardPath)
	}

	// What the daemon serves: the collector with every series present (the collector emits
	// all label values, zero or not), the Go and process collectors.
	st := &Stats{}
	st.Inference.Observe(50)
	st.EventAge.Observe(5000)
	st.setLiveAccuracy(0.9)
	mfs, err := newRegistry(newCollector(st)).Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]*dto.MetricFamily{} // queryable name -> family
	for _, mf := range mfs {
		n := mf.GetName()
		series[n] = mf
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				series[n+s] = mf
			}
		case dto.MetricType_SUMMARY:
			for _, s := range []string{"_sum", "_count"} {
				series[n+s] = mf
			}
		}
	}

	for _, e := range exprs {
		names := promMetricNames(e)
		if len(names) == 0 {
			t.Errorf("query uses no mlsched, go or process metric: %s", e)
		}
		for _, n := range names {
			if series[n] == nil {
				t.Errorf("query uses %s, which mlsched run does not register: %s", n, e)
			}
		}
		for _, m := range promMatchers(e) {
			mf := series[m.metric]
			if mf == nil || targetLabels[m.label] {
				continue
			}
			if !familyHas(mf, m.label, m.value) {
				t.Errorf("query matches %s{%s=%q}, a label value %s does not have: %s", m.metric, m.label, m.value, mf.GetName(), e)
			}
		}
	}
}

// targetLabels are added by Prometheus at scrape time, not by mlsched.
var targetLabels = map[string]bool{"instance": true, "job": true}

func familyHas(mf *dto.MetricFamily, label, value string) bool {
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				return true
			}
		}
	}
	return false
}

// dashboardExprs collects every PromQL query: targets' "expr" and query variables' "query"
// (a string, or an object with a "query" string), anywhere in the document.
func dashboardExprs(v any) []string {
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				walk(c, k)
			}
		case []any:
			for _, c := range x {
				walk(c, key)
			}
		case string:
			if key == "expr" || key == "query" && strings.Contains(x, "(") {
				out = append(out, x)
			}
		}
	}
	walk(v, "")
	return out
}

var (
	promString     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promIdentifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	// The families a dashboard may query: mlsched's own and the client library's.
	promOurs    = regexp.MustCompile(`^(mlsched|go|process)_`)
	promMatcher = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	promEqual   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"`)
)

// promMetricNames returns the metric names in a PromQL expression: identifiers of our
// families outside string literals and not called as functions.
func promMetricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	var names []string
	for _, loc := range promIdentifier.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") || !promOurs.MatchString(id) {
			continue
		}
		names = append(names, id)
	}
	return names
}

type promLabelMatch struct{ metric, label, value string }

// promMatchers returns the exact (=) label matchers of each metric selector (promEqual does
// not match "=~" or "!="); values with template variables are skipped.
func promMatchers(expr string) []promLabelMatch {
	var out []promLabelMatch
	for _, m := range promMatcher.FindAllStringSubmatch(expr, -1) {
		for _, eq := range promEqual.FindAllStringSubmatch(m[2], -1) {
			if !strings.Contains(eq[2], "$") {
				out = append(out, promLabelMatch{m[1], eq[1], eq[2]})
			}
		}
	}
	return out
}

// The parsers themselves, on the shapes the dashboard uses.
func TestPromQLParsing(t *testing.T) {
	e := `sum(rate(mlsched_decisions_total{decision="keep_local",instance=~"$instance"}[5m])) / sum(rate(mlsched_decisions_total{reason!="x"}[5m])) + histogram_quantile(0.5, sum by (le) (rate(go_gc_bucket{a="go_fake_total"}[1m])))`
	got := strings.Join(promMetricNames(e), " ")
	if got != "mlsched_decisions_total mlsched_decisions_total go_gc_bucket" {
		t.Errorf("names: %q", got)
	}
	ms := promMatchers(e)
	if len(ms) != 2 || ms[0] != (promLabelMatch{"mlsched_decisions_total", "decision", "keep_local"}) || ms[1] != (promLabelMatch{"go_gc_bucket", "a", "go_fake_total"}) {
		t.Errorf("matchers: %+v", ms)
	}
}
