package gpu_test

import (
	"errors"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/gpu/gputest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func TestNVMLMetadataAndReads(t *testing.T) {
	testutil.VirtualTime(t, nvmlMetadataAndReads)
}

func nvmlMetadataAndReads(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}, &gputest.Fault{NoEnergy: true}), nil)
	require.NoError(t, err)
	defer src.Close()
	env := src.Environment()
	assert.Equal(t, "580.159.04", env.Driver.DriverVersion)
	assert.Equal(t, "13.0", env.Driver.CUDADriverVersion)
	require.Len(t, env.Devices, 2)
	d0 := env.Devices[0]
	assert.Equal(t, "GPU-aaaa", d0.UUID)
	assert.Equal(t, "9.0", d0.ComputeCapability)
	assert.Equal(t, 700.0, d0.PowerLimits.EnforcedW)
	assert.Equal(t, 200.0, d0.PowerLimits.MinW)
	assert.Nil(t, d0.MIGMode, "MIG not supported → unknown, not false")
	assert.True(t, d0.EnergyCounter)
	assert.False(t, env.Devices[1].EnergyCounter, "pre-Volta: no counter")

	devs := src.Devices()
	c, err := devs[0].ReadEnergy()
	require.NoError(t, err)
	assert.Equal(t, trace.StampOf(time.Now()), c.Time, "stamped on the clock")
	assert.Equal(t, uint64(c.Time.Time().UnixMicro())/10, c.EnergyMJ, "the mock's counter at that instant")
	_, err = devs[1].ReadEnergy()
	assert.ErrorIs(t, err, gpu.ErrNotSupported)

	ss, err := devs[0].PowerSamples(time.Time{})
	require.NoError(t, err)
	assert.Len(t, ss, 101, "the mock's 2 s of 50 Hz history, both ends")
	assert.Equal(t, 100.0, ss[0].PowerW)
	assert.Equal(t, trace.StampOf(time.Now()), ss[len(ss)-1].Time)
	time.Sleep(50 * time.Millisecond)
	more, err := devs[0].PowerSamples(ss[len(ss)-1].Time.Time())
	require.NoError(t, err)
	assert.Len(t, more, 2, "only samples newer than the last seen: 20 and 40 ms later")

	tm, err := devs[0].Telemetry()
	require.NoError(t, err)
	assert.Equal(t, 95.0, tm.InstantPowerW)
	assert.Equal(t, 1200e6, tm.SMClockHz)
	assert.Equal(t, 0.5, tm.UtilGPU)
	assert.Equal(t, 0.0, tm.PState, "P0")
	ps, err := devs[0].Processes()
	require.NoError(t, err)
	assert.Equal(t, []gpu.Process{{PID: gputest.DefaultPID, UsedMemoryBytes: 1 << 20, GPUInstance: -1, ComputeInstance: -1}}, ps, "a PID no host process has: no identity")
}

func TestNVMLLibraryMissing(t *testing.T) {
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	_, err := gpu.OpenNVML(lib, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "libnvidia-ml.so.1 not found")
	assert.Contains(t, err.Error(), "--replay", "names the fix")
}

func TestNVMLLostGPU(t *testing.T) {
	f := &gputest.Fault{LostAfter: 2} // the capability probe at open is call 1
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}, f), nil)
	require.NoError(t, err)
	d := src.Devices()[1]
	_, err = d.PowerSamples(time.Time{})
	require.NoError(t, err)
	_, err = d.PowerSamples(time.Time{})
	assert.ErrorIs(t, err, gpu.ErrGPULost)
	assert.False(t, errors.Is(err, gpu.ErrNotSupported))
}

func TestSelect(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}, &gputest.Fault{}), nil)
	require.NoError(t, err)
	devs := src.Devices()
	cases := []struct {
		spec    []string
		want    []int
		wantErr string
	}{
		{nil, []int{0, 1}, ""},
		{[]string{"all"}, []int{0, 1}, ""},
		{[]string{"1"}, []int{1}, ""},
		{[]string{"GPU-bb", "0", "1"}, []int{1, 0}, ""},
		{[]string{"7"}, nil, `GPU "7": no such device (have 0=GPU-aaaa, 1=GPU-bbbb)`},
		{[]string{"GPU-"}, nil, "matches 2 devices"},
	}
	for _, tc := range cases {
		got, err := gpu.Select(devs, tc.spec)
		if tc.wantErr != "" {
			assert.ErrorContains(t, err, tc.wantErr, "%v", tc.spec)
			continue
		}
		require.NoError(t, err)
		var idx []int
		for _, d := range got {
			idx = append(idx, d.Info().Index)
		}
		assert.Equal(t, tc.want, idx, "%v", tc.spec)
	}
}
