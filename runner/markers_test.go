package runner

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/lem-energy/lem/internal/trace"
)

func TestParseMarker(t *testing.T) {
	now := time.Unix(100, 0)
	cases := []struct {
		line    string
		ok      bool
		wantErr bool
		types   []string
		name    string
		attrs   map[string]string
	}{
		{line: "hello world"},
		{line: ""},
		{line: "LEM_PHASEX decode"},
		{line: "LEM_PHASE prefill", ok: true, types: []string{trace.EventPhase}, name: "prefill"},
		{line: "  LEM_PHASE decode/bs-8  ", ok: true, types: []string{trace.EventPhase}, name: "decode/bs-8"},
		{line: "LEM_PHASE", ok: true, wantErr: true},
		{line: "LEM_PHASE two words", ok: true, wantErr: true},
		{line: "LEM_PHASE bad$name", ok: true, wantErr: true},
		{line: "LEM_RESULT output_tokens=128 requests=1", ok: true, types: []string{trace.EventResult},
			attrs: map[string]string{"output_tokens": "128", "requests": "1"}},
		{line: "LEM_RESULT", ok: true, wantErr: true},
		{line: "LEM_RESULT tokens", ok: true, wantErr: true},
		{line: "LEM_RESULT =5", ok: true, wantErr: true},
		{line: "MARK bs8-end 1795735668519972337 tokens=1024", ok: true, types: []string{trace.EventPhaseEnd, trace.EventResult},
			name: "bs8", attrs: map[string]string{"tokens": "1024"}},
		{line: "MARK x y", ok: true, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.line, func(t *testing.T) {
			evs, ok, err := ParseMarker(tc.line, now)
			assert.Equal(t, tc.ok, ok)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			assert.NoError(t, err)
			var types []string
			for _, e := range evs {
				types = append(types, e.Type)
			}
			assert.Equal(t, tc.types, types)
			if len(evs) == 0 {
				return
			}
			assert.Equal(t, tc.name, evs[0].Name)
			if tc.attrs != nil {
				assert.Equal(t, tc.attrs, evs[len(evs)-1].Attrs)
			}
			if evs[0].Type == trace.EventPhase {
				assert.Equal(t, now, evs[0].Time, "stamped when read")
			}
		})
	}
}
