package precision_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/precision"
	"github.com/lem-energy/lem/internal/manifest"
)

// svgDoc is what a test reads back from a plot: the root's name and every bar's class, height and title.
type svgDoc struct {
	root string
	bars []svgBar
}

type svgBar struct {
	class, title string
	y, height    float64
}

// parseSVG reads the plot as XML (any malformed markup fails) and gathers its bars.
func parseSVG(t *testing.T, b []byte) svgDoc {
	t.Helper()
	var doc svgDoc
	d := xml.NewDecoder(bytes.NewReader(b))
	var cur *svgBar
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return doc
		}
		require.NoError(t, err)
		switch e := tok.(type) {
		case xml.StartElement:
			if doc.root == "" {
				doc.root = e.Name.Space + " " + e.Name.Local
			}
			if e.Name.Local != "rect" {
				continue
			}
			var bar svgBar
			for _, a := range e.Attr {
				switch a.Name.Local {
				case "class":
					bar.class = a.Value
				case "y":
					bar.y = num(t, a.Value)
				case "height":
					bar.height = num(t, a.Value)
				}
			}
			if strings.HasPrefix(bar.class, "bar ") {
				doc.bars = append(doc.bars, bar)
				cur = &doc.bars[len(doc.bars)-1]
			}
		case xml.CharData:
			if cur != nil {
				cur.title += string(e)
			}
		case xml.EndElement:
			if e.Name.Local == "rect" {
				cur = nil
			}
		}
	}
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, s)
	return v
}

// The plot of a few rows: well-formed SVG; one bar per measured value (an unmeasured one left out), each titled
// with its value; bars of the same panel scaled alike (height proportional to the value); the same rows give the
// same bytes.
func TestSVG(t *testing.T) {
	sq := []precision.SquareRow{
		{PeriodMS: 10, SampledPct: 14, HybridPct: 0.5, AveragePct: -2},
		{PeriodMS: 20, SampledPct: -7, HybridPct: manifest.Null, AveragePct: 1},
	}
	bs := []precision.BurstRow{
		{LengthMS: 10, Cadence: "native", N: 8, CV: 0.30},
		{LengthMS: 200, Cadence: "native", N: 8, CV: 0.02},
		{LengthMS: 10, Cadence: "50 Hz only", N: 8, CV: 0.10},
		{LengthMS: 200, Cadence: "50 Hz only", N: 1, CV: manifest.Null},
	}
	out := precision.SVG("a <title> & more", sq, bs)
	require.True(t, bytes.HasPrefix(out, []byte("<svg ")), "starts as SVG: %.40q", out)
	doc := parseSVG(t, out)
	assert.Equal(t, "http://www.w3.org/2000/svg svg", doc.root)

	var titles []string
	heights := map[string]float64{}
	for _, b := range doc.bars {
		titles = append(titles, b.class+": "+b.title)
		heights[b.title] = b.height
	}
	assert.Equal(t, []string{
		"bar square: 50 Hz samples, 10 ms: +14.00 %",
		"bar square: hybrid, 10 ms: +0.50 %",
		"bar square: 1 s-average power, 10 ms: -2.00 %",
		"bar square: 50 Hz samples, 20 ms: -7.00 %",
		"bar square: 1 s-average power, 20 ms: +1.00 %",
		"bar burst: 10 ms, native: CV 30.00 % (8 bursts)",
		"bar burst: 200 ms, native: CV 2.00 % (8 bursts)",
		"bar burst: 10 ms, 50 Hz only: CV 10.00 % (8 bursts)",
	}, titles)
	assert.InDelta(t, 14.0/7, heights["50 Hz samples, 10 ms: +14.00 %"]/heights["50 Hz samples, 20 ms: -7.00 %"], 0.01)
	assert.InDelta(t, 30.0/10, heights["10 ms, native: CV 30.00 % (8 bursts)"]/heights["10 ms, 50 Hz only: CV 10.00 % (8 bursts)"], 0.01)
	// Positive departures rise from the zero line, negative ones hang from it: both meet it.
	var up, down svgBar
	for _, b := range doc.bars {
		switch b.title {
		case "50 Hz samples, 10 ms: +14.00 %":
			up = b
		case "50 Hz samples, 20 ms: -7.00 %":
			down = b
		}
	}
	assert.InDelta(t, up.y+up.height, down.y, 0.15, "the zero line")

	assert.Equal(t, out, precision.SVG("a <title> & more", slices.Clone(sq), slices.Clone(bs)), "same rows, same bytes")

	// Nothing measured: both panels say so, and it is still SVG.
	doc = parseSVG(t, precision.SVG("empty", nil, nil))
	assert.Empty(t, doc.bars)
	assert.Contains(t, string(precision.SVG("empty", nil, nil)), "no square-wave phases")
}
