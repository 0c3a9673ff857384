package main

import (
	"fmt"
	"math"
	"strings"
)

// Chart geometry (pixels).
const (
	chartWidth  = 980
	labelWidth  = 190
	valueWidth  = 170
	barHeight   = 16
	barGap      = 5
	groupGap    = 34
	chartTop    = 80
	footerLine  = 17
	chartMargin = 16
)

// barColor is the fill of a case's bar.
func barColor(c *CaseResult) (fill string, opacity float64) {
	opacity = 1
	switch {
	case c.Impl == implPahoFile:
		fill = "#b8b8b8"
	case c.Impl == implPahoMem && c.QoS == 0:
		fill = "#dadada"
	case c.Impl == implPahoMem:
		fill = "#6e6e6e"
	case c.QoS == 2:
		fill = "#8e5cc2"
	default:
		fill = "#1f6fb4"
	}
	if c.Impl == implHoldfast {
		switch c.Durability {
		case "each":
			opacity = 0.6
		case "nosync":
			opacity = 0.35
		}
	}
	return fill, opacity
}

type bar struct {
	label   string
	value   float64
	note    string
	fill    string
	opacity float64
	// noScale bars (the QoS 0 reference) do not set the scale; a longer
	// one is cut at the plot's edge and marked.
	noScale bool
}

type group struct {
	title string
	bars  []bar
	lines []refLine
}

// refLine is a target drawn across a group at value.
type refLine struct {
	value float64
	label string
}

// chart renders the results as a horizontal bar chart (msg/s, linear), one
// group per goroutine count plus the drain, and the targets as text.
func (r *Results) chart() string {
	var groups []group
	for _, g := range r.Params.Goroutines {
		gr := group{title: fmt.Sprintf("%d publishing goroutine%s: publish-to-acknowledged msg/s", g, plural(g))}
		for i := range r.Cases {
			c := &r.Cases[i]
			if c.Goroutines != g || strings.Contains(c.Name, "-sub-") {
				continue
			}
			fill, op := barColor(c)
			note := thousands(c.MsgPerSec)
			if c.Impl == implHoldfast && c.RatioMem > 0 {
				note += fmt.Sprintf("  %.2fx mem, %.1fx file", c.RatioMem, c.RatioFile)
			}
			gr.bars = append(gr.bars, bar{label: c.Name, value: c.MsgPerSec, note: note, fill: fill, opacity: op, noScale: c.QoS == 0})
		}
		if mem := r.find(fmt.Sprintf("paho-mem-q1-g%d", g)); mem != nil && g == 16 {
			gr.lines = append(gr.lines, refLine{0.8 * mem.MsgPerSec, "T1: 0.8x paho-mem"})
		}
		if file := r.find(fmt.Sprintf("paho-file-q1-g%d", g)); file != nil {
			switch g {
			case 16:
				gr.lines = append(gr.lines, refLine{10 * file.MsgPerSec, "T2: 10x paho-file"})
			case 1:
				gr.lines = append(gr.lines, refLine{2 * file.MsgPerSec, "T3: 2x paho-file"})
			}
		}
		if len(gr.bars) > 0 {
			groups = append(groups, gr)
		}
	}
	if d := r.Drain; d != nil {
		gr := group{title: fmt.Sprintf("Drain of a %s-message backlog after the broker returns (msg/s)", thousands(float64(d.Messages)))}
		if mem := r.find("paho-mem-q1-g1"); mem != nil {
			gr.bars = append(gr.bars, bar{label: "paho-mem-q1-g1 (live)", value: mem.MsgPerSec, note: thousands(mem.MsgPerSec), fill: "#6e6e6e", opacity: 1})
			gr.lines = append(gr.lines, refLine{0.8 * mem.MsgPerSec, "T4: 0.8x"})
		}
		gr.bars = append(gr.bars, bar{label: "hf drain", value: d.MsgPerSec,
			note: fmt.Sprintf("%s  %.2fx", thousands(d.MsgPerSec), d.RatioMem), fill: "#1f6fb4", opacity: 1})
		if ref := r.find("paho-mem-sub-q1-g1"); ref != nil {
			gr.bars = append(gr.bars, bar{label: "paho live + subscriber", value: ref.MsgPerSec, note: thousands(ref.MsgPerSec), fill: "#9a9a9a", opacity: 1})
		}
		gr.bars = append(gr.bars, bar{label: "hf drain + subscriber", value: d.SubMsgPerSec,
			note: fmt.Sprintf("%s  %.2fx, in order: %v", thousands(d.SubMsgPerSec), d.RatioRef, d.InOrder), fill: "#5b9bd5", opacity: 1})
		groups = append(groups, gr)
	}

	maxV := 1.0
	for _, g := range groups {
		for _, b := range g.bars {
			if !b.noScale {
				maxV = math.Max(maxV, b.value)
			}
		}
		for _, l := range g.lines {
			maxV = math.Max(maxV, l.value)
		}
	}
	plotW := float64(chartWidth - labelWidth - valueWidth - 2*chartMargin)
	x0 := float64(chartMargin + labelWidth)
	maxV *= 1.05
	scale := plotW / maxV

	var body strings.Builder
	y := chartTop
	for _, g := range groups {
		fmt.Fprintf(&body, `<text x="%d" y="%d" class="h">%s</text>`+"\n", chartMargin, y, esc(g.title))
		y += 10
		top := y
		bottom := y + len(g.bars)*(barHeight+barGap) - barGap
		// Target lines first, so that bars and values are drawn over them.
		for i, l := range g.lines {
			lx := x0 + l.value*scale
			fmt.Fprintf(&body, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="t"/>`+"\n", lx, top-4, lx, bottom+2)
			fmt.Fprintf(&body, `<text x="%.1f" y="%d" class="tl">%s</text>`+"\n", lx+3, bottom+12+10*i, esc(l.label))
		}
		for _, b := range g.bars {
			w := math.Max(1, b.value*scale)
			cut := w > plotW
			if cut {
				w = plotW
			}
			fmt.Fprintf(&body, `<text x="%.0f" y="%d" class="l">%s</text>`+"\n", x0-6, y+barHeight-4, esc(b.label))
			fmt.Fprintf(&body, `<rect x="%.0f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="%.2f"/>`+"\n", x0, y, w, barHeight, b.fill, b.opacity)
			if cut {
				fmt.Fprintf(&body, `<text x="%.1f" y="%d" class="cut">//</text>`+"\n", x0+w-18, y+barHeight-4)
			}
			fmt.Fprintf(&body, `<text x="%.1f" y="%d" class="v">%s</text>`+"\n", x0+w+5, y+barHeight-4, esc(b.note))
			y += barHeight + barGap
		}
		y += groupGap + 10*max(0, len(g.lines)-1)
	}

	// Targets.
	fmt.Fprintf(&body, `<text x="%d" y="%d" class="h">Targets (ratios measured in this run)</text>`+"\n", chartMargin, y)
	y += footerLine + 2
	for _, t := range r.Targets {
		res, cls := "not measured", "na"
		if t.Measured {
			res, cls = "MISS", "miss"
			if t.Pass {
				res, cls = "pass", "pass"
			}
		}
		line := fmt.Sprintf("%s %s: %s", t.ID, t.What, t.Figure)
		if t.Ratio > 0 {
			line += fmt.Sprintf(" = %.2fx", t.Ratio)
		}
		line += " (want " + t.Want + ")"
		fmt.Fprintf(&body, `<text x="%d" y="%d" class="%s">%s</text>`, chartMargin, y, cls, res)
		for i, part := range wrap(line, 150) {
			fmt.Fprintf(&body, `<text x="%d" y="%d" class="f">%s</text>`+"\n", chartMargin+86, y+i*(footerLine-3), esc(part))
			if i > 0 {
				y += footerLine - 3
			}
		}
		y += footerLine
	}
	height := y + chartMargin

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">`+"\n", chartWidth, height, chartWidth, height)
	s.WriteString(`<style>
.title{font-size:16px;font-weight:bold}.sub{font-size:11px;fill:#555}.h{font-size:13px;font-weight:bold}
.l{font-size:11px;text-anchor:end}.v{font-size:11px;fill:#333;paint-order:stroke;stroke:#fff;stroke-width:3px}.f{font-size:11px}
.cut{font-size:12px;font-weight:bold;fill:#fff}
.t{stroke:#d62728;stroke-width:1.2;stroke-dasharray:4 3}.tl{font-size:10px;fill:#d62728;paint-order:stroke;stroke:#fff;stroke-width:3px}
.pass{font-size:11px;font-weight:bold;fill:#2ca02c}.miss{font-size:11px;font-weight:bold;fill:#d62728}.na{font-size:11px;fill:#888}
</style>
`)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", chartWidth, height)
	fmt.Fprintf(&s, `<text x="%d" y="24" class="title">Holdfast vs bare paho, one Mosquitto %s on loopback, %d-byte payloads</text>`+"\n", chartMargin, esc(r.Env.Mosquitto), r.Params.PayloadBytes)
	fmt.Fprintf(&s, `<text x="%d" y="40" class="sub">%s</text>`+"\n", chartMargin, esc(fmt.Sprintf(
		"%d CPUs, %s, %s, commit %s, %s; other processes kept %.2f cores busy during the run",
		r.Env.CPUs, r.Env.GOOS+"/"+r.Env.GOARCH, r.Env.Go, r.Env.Commit, r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Env.OtherCores)))
	fmt.Fprintf(&s, `<text x="%d" y="54" class="sub">%s</text>`+"\n", chartMargin, esc(
		"grey: bare paho (dark: memory store, light: FileStore, lightest: QoS 0); blue: Holdfast QoS 1, purple: QoS 2 (solid: group commit, lighter: sync-each, lightest: no-sync)"))
	s.WriteString(body.String())
	s.WriteString("</svg>\n")
	return s.String()
}

// wrap splits s at spaces into lines of at most width bytes (a longer word
// gets a line of its own).
func wrap(s string, width int) []string {
	var lines []string
	for len(s) > width {
		i := strings.LastIndexByte(s[:width], ' ')
		if i <= 0 {
			i = width
		}
		lines = append(lines, s[:i])
		s = strings.TrimLeft(s[i:], " ")
	}
	return append(lines, s)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// esc escapes text for XML.
func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
