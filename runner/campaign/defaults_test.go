package campaign

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/runner"
)

// The cool-down gate each run of a campaign gets, from the file as Load reads it to the options lem-run runs
// with: without a cooldown setting (or with a cooldown block that leaves the target out) the idle gate, so runs
// start from the same thermal state (docs/CAMPAIGNS.md); `none` turns it off; a target given is kept, and the
// command line's --cooldown overrides the file.
func TestCampaignCooldownDefault(t *testing.T) {
	const exp = "experiments:\n  - name: x\n    command: [ls]\n"
	idle := &manifest.Cooldown{Mode: runner.CooldownIdle}
	cases := []struct {
		name, cooldown, flag string
		want                 string
		gate                 *manifest.Cooldown // runner.ParseCooldown of want; nil: no gate
	}{
		{"no setting", "", "", "idle", idle},
		{"timeout only", "cooldown: {timeout: 2m}\n", "", "idle", idle},
		{"none", "cooldown: {target: none}\n", "", "none", nil},
		{"stable", "cooldown: {target: stable}\n", "", "stable", &manifest.Cooldown{Mode: "stable"}},
		{"temperature", "cooldown: {target: 45C}\n", "", "45C", &manifest.Cooldown{Mode: "temperature", TargetC: 45}},
		{"flag over the default", "", "none", "none", nil},
		{"flag over the file", "cooldown: {target: 45C}\n", "idle", "idle", idle},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Load(writeCampaign(t, "name: a\n"+c.cooldown+exp))
			require.NoError(t, err)
			ex := &executor{p: &Prepared{File: f, out: t.TempDir()}, opts: Options{Cooldown: c.flag}, st: &State{}}
			o := ex.runOptions("a-x-c0", "x", 0)
			assert.Equal(t, c.want, o.Cooldown)
			gate, err := runner.ParseCooldown(o.Cooldown)
			require.NoError(t, err)
			assert.Equal(t, c.gate, gate)
		})
	}
}

// A cool-down target that is none of idle, stable, none or a temperature is refused when the file is read, in one
// line naming the file, the line, the key and the value.
func TestCampaignCooldownBad(t *testing.T) {
	for _, v := range []string{"lukewarm", "0C", "200C", "-5"} {
		t.Run(v, func(t *testing.T) {
			p := writeCampaign(t, "name: a\ncooldown:\n  target: "+v+"\nexperiments:\n  - name: x\n    command: [ls]\n")
			_, err := Load(p)
			require.Error(t, err)
			assert.Equal(t, p+`:3: cooldown.target: cool-down "`+v+`": want "idle", "stable", "none" or a temperature such as 45C`,
				err.Error())
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

func writeCampaign(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "campaign.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	require.False(t, strings.Contains(body, "\t"), "YAML indents with spaces")
	return p
}
