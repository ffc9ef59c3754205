package helm_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "lem-exporter"
	namespace = "gpu-monitoring"
	release   = "lem-exporter"
	port      = 9636
)

// rendered is one release's objects, each decoded strictly (an unknown or misspelt field fails the test) into
// the Kubernetes API types or, for the Prometheus Operator's kinds, its own API module's types.
type rendered struct {
	DaemonSet      *appsv1.DaemonSet
	Service        *corev1.Service
	Secret         *corev1.Secret
	PVC            *corev1.PersistentVolumeClaim
	ServiceMonitor *monitoringv1.ServiceMonitor
	PodMonitor     *monitoringv1.PodMonitor
	PrometheusRule *monitoringv1.PrometheusRule
	Kinds          []string // in the order of the manifest
	Notes          string
	Manifest       string
}

func values(t *testing.T, doc string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(doc))
	require.NoError(t, err)
	return v
}

// install renders the chart as `helm install --dry-run` (client only: no cluster) does, values schema and all.
func install(t *testing.T, vals string) (*rendered, error) {
	t.Helper()
	return installIn(t, namespace, vals)
}

func installIn(t *testing.T, ns, vals string) (*rendered, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	require.NoError(t, err)
	in := action.NewInstall(&action.Configuration{Log: t.Logf})
	in.ClientOnly, in.DryRun, in.ReleaseName, in.Namespace = true, true, release, ns
	rel, err := in.Run(chrt, values(t, vals))
	if err != nil {
		return nil, err
	}
	return decode(t, rel.Manifest, rel.Info.Notes), nil
}

func mustInstall(t *testing.T, vals string) *rendered {
	t.Helper()
	return mustInstallIn(t, namespace, vals)
}

func mustInstallIn(t *testing.T, ns, vals string) *rendered {
	t.Helper()
	r, err := installIn(t, ns, vals)
	require.NoError(t, err, "values:\n%s", vals)
	return r
}

func decode(t *testing.T, manifest, notes string) *rendered {
	t.Helper()
	r := &rendered{Notes: notes, Manifest: manifest}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(manifest, -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		var tm metav1.TypeMeta
		require.NoError(t, yaml.Unmarshal([]byte(doc), &tm))
		var into any
		switch tm.Kind {
		case "DaemonSet":
			r.DaemonSet = &appsv1.DaemonSet{}
			into = r.DaemonSet
		case "Service":
			r.Service = &corev1.Service{}
			into = r.Service
		case "Secret":
			r.Secret = &corev1.Secret{}
			into = r.Secret
		case "PersistentVolumeClaim":
			r.PVC = &corev1.PersistentVolumeClaim{}
			into = r.PVC
		case "ServiceMonitor":
			r.ServiceMonitor = &monitoringv1.ServiceMonitor{}
			into = r.ServiceMonitor
		case "PodMonitor":
			r.PodMonitor = &monitoringv1.PodMonitor{}
			into = r.PodMonitor
		case "PrometheusRule":
			r.PrometheusRule = &monitoringv1.PrometheusRule{}
			into = r.PrometheusRule
		default:
			t.Fatalf("unexpected kind %q in:\n%s", tm.Kind, doc)
		}
		require.NoError(t, yaml.UnmarshalStrict([]byte(doc), into), "strict decoding of a %s:\n%s", tm.Kind, doc)
		r.Kinds = append(r.Kinds, tm.Kind)
	}
	return r
}

func (r *rendered) container(t *testing.T) corev1.Container {
	t.Helper()
	require.NotNil(t, r.DaemonSet)
	cs := r.DaemonSet.Spec.Template.Spec.Containers
	require.Len(t, cs, 1)
	return cs[0]
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func mountOf(c corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volumeOf(ds *appsv1.DaemonSet, name string) *corev1.Volume {
	for i, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return &ds.Spec.Template.Spec.Volumes[i]
		}
	}
	return nil
}

// argValue is the value of --name=value among args, and whether it is there.
func argValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// subset says whether every label of sel is in labels with the same value.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func appVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	require.NoError(t, err)
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	require.NoError(t, yaml.Unmarshal(b, &c))
	require.NotEmpty(t, c.AppVersion)
	return c.AppVersion
}

func TestChartLints(t *testing.T) {
	for name, vals := range valueSets {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict, lint.Namespace = true, namespace
			res := lint.Run([]string{chartDir}, values(t, vals))
			require.Equal(t, 1, res.TotalChartsLinted)
			assert.Empty(t, res.Errors, "helm lint --strict")
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
		})
	}
}

// valueSets are the configurations the tests render: defaults and the interesting departures from them.
var valueSets = map[string]string{
	"defaults":       ``,
	"existingSecret": "markers: {existingSecret: lem-token, secretKey: token}",
	"pvc recording": `record:
  enabled: true
  maxAge: 72h
  volume: {type: persistentVolumeClaim, persistentVolumeClaim: {storageClassName: nfs, size: 20Gi}}`,
	"hostPath recording": `record: {enabled: true, volume: {hostPath: {path: /data/lem}}}`,
	"monitors off":       `{serviceMonitor: {enabled: false}, prometheusRule: {enabled: false}}`,
	"podMonitor":         `{serviceMonitor: {enabled: false}, podMonitor: {enabled: true, interval: 30s, additionalLabels: {release: kps}}}`,
	"hostPort and remote write": `hostPort: {enabled: true}
remoteWrite: {url: "http://mimir.mimir:8080/api/v1/push", bearerTokenSecret: {name: mimir-token}}
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}`,
	"process containers":     `processes: {containers: true, interval: 1s, maxSeries: 16}`,
	"processes off":          `processes: {enabled: false}`,
	"process containers cri": `processes: {containers: true, criSocket: /run/crio/crio.sock}`,
}

func TestChartDefaults(t *testing.T) {
	r := mustInstall(t, valueSets["defaults"])
	assert.Equal(t, []string{"Secret", "Service", "DaemonSet", "PrometheusRule", "ServiceMonitor"}, r.Kinds)
	ds, c := r.DaemonSet, r.container(t)
	pod := ds.Spec.Template

	for _, m := range []metav1.ObjectMeta{ds.ObjectMeta, r.Service.ObjectMeta, r.Secret.ObjectMeta,
		r.ServiceMonitor.ObjectMeta, r.PrometheusRule.ObjectMeta} {
		assert.Equal(t, namespace, m.Namespace, m.Name)
		assert.Equal(t, "lem-exporter", m.Name, "the release name, which holds the chart name")
		assert.Equal(t, "lem-exporter", m.Labels["app.kubernetes.io/name"], m.Name)
	}

	// Scheduling on GPU nodes through the NVIDIA runtime, every GPU visible without reserving one.
	assert.True(t, subset(ds.Spec.Selector.MatchLabels, pod.Labels), "the selector matches the pods")
	assert.Equal(t, "nvidia", *pod.Spec.RuntimeClassName)
	assert.Equal(t, map[string]string{"nvidia.com/gpu.present": "true"}, pod.Spec.NodeSelector)
	assert.Contains(t, pod.Spec.Tolerations, corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists,
		Effect: corev1.TaintEffectNoSchedule})
	assert.Equal(t, "all", envOf(c)["NVIDIA_VISIBLE_DEVICES"].Value)
	assert.NotContains(t, c.Resources.Limits, corev1.ResourceName("nvidia.com/gpu"))
	assert.Equal(t, appsv1.RollingUpdateDaemonSetStrategyType, ds.Spec.UpdateStrategy.Type)

	// Image: registry, repository and the chart's appVersion as tag.
	assert.Equal(t, "ghcr.io/lem-energy/lem-exporter:"+appVersion(t), c.Image)
	assert.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy)

	// Port and probes.
	require.Len(t, c.Ports, 1)
	assert.Equal(t, corev1.ContainerPort{Name: "metrics", ContainerPort: port, Protocol: corev1.ProtocolTCP}, c.Ports[0])
	addr, _ := argValue(c.Args, "web.listen-address")
	assert.Equal(t, fmt.Sprintf(":%d", port), addr)
	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.ReadinessProbe)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, "metrics", c.LivenessProbe.HTTPGet.Port.String())
	assert.Equal(t, "metrics", c.ReadinessProbe.HTTPGet.Port.String())

	// Security: non-root, read-only root, no capabilities, no API token.
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	assert.True(t, *psc.RunAsNonRoot)
	assert.Equal(t, int64(65532), *psc.RunAsUser)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
	assert.True(t, *sc.ReadOnlyRootFilesystem)
	assert.False(t, *sc.AllowPrivilegeEscalation)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.Empty(t, sc.Capabilities.Add)
	assert.False(t, *pod.Spec.AutomountServiceAccountToken)
	assert.Empty(t, pod.Spec.InitContainers)

	// Resources: requests, a memory limit, no CPU limit (throttling would delay the buffer drains).
	assert.Equal(t, "70m", c.Resources.Requests.Cpu().String())
	assert.Equal(t, "128Mi", c.Resources.Requests.Memory().String())
	assert.Equal(t, "512Mi", c.Resources.Limits.Memory().String())
	assert.NotContains(t, c.Resources.Limits, corev1.ResourceCPU)
	assert.Equal(t, corev1.ResourceFieldSelector{ContainerName: c.Name, Resource: "limits.memory"},
		*envOf(c)["GOMEMLIMIT"].ValueFrom.ResourceFieldRef, "the Go runtime knows the limit")

	// The marker token: a generated Secret, mounted where --markers.token-file points.
	require.NotNil(t, r.Secret)
	token := string(r.Secret.Data["marker-token"])
	assert.Regexp(t, `^[A-Za-z0-9]{40}$`, token)
	assert.NotEqual(t, "change-me", token)
	assert.Equal(t, r.Secret.Name, volumeOf(ds, "marker-token").Secret.SecretName)
	tokenFile, _ := argValue(c.Args, "markers.token-file")
	assert.Equal(t, filepath.Join(mountOf(c, "marker-token").MountPath, "marker-token"), tokenFile)
	assert.True(t, mountOf(c, "marker-token").ReadOnly)
	again := mustInstall(t, "")
	assert.NotEqual(t, token, string(again.Secret.Data["marker-token"]), "a fresh install draws a fresh token")

	// Nothing recorded, nothing streamed by default; the stream would be labelled with the node.
	_, recording := argValue(c.Args, "record.dir")
	assert.False(t, recording)
	assert.NotContains(t, envOf(c), "LEM_REMOTE_WRITE_URL")
	assert.Equal(t, "spec.nodeName", envOf(c)["NODE_NAME"].ValueFrom.FieldRef.FieldPath)
	assert.Equal(t, "$(NODE_NAME)", envOf(c)["LEM_REMOTE_WRITE_INSTANCE"].Value)
	assert.Less(t, slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" }),
		slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "LEM_REMOTE_WRITE_INSTANCE" }),
		"a variable can only refer to one defined before it")

	// The Service: a workload reaches the exporter on its own node.
	svc := r.Service
	assert.Equal(t, corev1.ServiceTypeClusterIP, svc.Spec.Type)
	assert.Empty(t, svc.Spec.ClusterIP, "not headless")
	assert.Equal(t, corev1.ServiceInternalTrafficPolicyLocal, *svc.Spec.InternalTrafficPolicy)
	assert.True(t, svc.Spec.PublishNotReadyAddresses)
	assert.True(t, subset(svc.Spec.Selector, pod.Labels), "the Service selects the DaemonSet's pods")
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, int32(port), svc.Spec.Ports[0].Port)
	assert.Equal(t, "metrics", svc.Spec.Ports[0].TargetPort.String())
	assert.Contains(t, r.Notes, "lem-exporter.gpu-monitoring.svc:9636", "NOTES name the node-local URL")

	// The ServiceMonitor scrapes that Service's pods every 15 s as job lem-exporter, instance = node.
	sm := r.ServiceMonitor
	assert.True(t, subset(sm.Spec.Selector.MatchLabels, svc.Labels), "the ServiceMonitor selects the Service")
	assert.Equal(t, []string{namespace}, sm.Spec.NamespaceSelector.MatchNames)
	require.Len(t, sm.Spec.Endpoints, 1)
	ep := sm.Spec.Endpoints[0]
	assert.Equal(t, "metrics", ep.Port)
	assert.Equal(t, monitoringv1.Duration("15s"), ep.Interval)
	assert.True(t, *ep.HonorTimestamps)
	assertJobAndInstance(t, ep.RelabelConfigs)

	// The PrometheusRule is rules.yml, with job selectors that the monitors' job satisfies.
	assertRulesMatchFile(t, r.PrometheusRule)
}

// assertJobAndInstance checks the relabelings give job="lem-exporter" (what the alerts select) and instance = the
// pod's node.
func assertJobAndInstance(t *testing.T, rcs []monitoringv1.RelabelConfig) {
	t.Helper()
	require.GreaterOrEqual(t, len(rcs), 2)
	job, inst := rcs[0], rcs[1]
	assert.Equal(t, "job", job.TargetLabel)
	assert.Empty(t, job.SourceLabels)
	require.NotNil(t, job.Replacement)
	assert.Equal(t, "lem-exporter", *job.Replacement)
	assert.Equal(t, "instance", inst.TargetLabel)
	assert.Equal(t, []monitoringv1.LabelName{"__meta_kubernetes_pod_node_name"}, inst.SourceLabels)
	for _, rc := range rcs {
		assert.Contains(t, []string{"", "replace"}, rc.Action, "replace is the action that sets labels")
	}
	for _, rc := range rcs[2:] {
		assert.NotEqual(t, "job", rc.TargetLabel, "nothing after it changes the job")
	}
}

var jobSelector = regexp.MustCompile(`\bjob\s*=~?\s*"([^"]*)"`)

// assertRulesMatchFile checks the chart's PrometheusRule holds exactly deploy/prometheus/rules.yml (the file
// promtool tests), and that every job selector in it names the job the monitors set.
func assertRulesMatchFile(t *testing.T, pr *monitoringv1.PrometheusRule) {
	t.Helper()
	require.NotNil(t, pr)
	b, err := os.ReadFile("../prometheus/rules.yml")
	require.NoError(t, err)
	var want monitoringv1.PrometheusRuleSpec
	require.NoError(t, yaml.UnmarshalStrict(b, &want))
	assert.Equal(t, want, pr.Spec)
	var alerts, jobs int
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts++
			}
			for _, m := range jobSelector.FindAllStringSubmatch(r.Expr.String(), -1) {
				assert.Equal(t, "lem-exporter", m[1], "%s%s selects a job no shipped scrape configuration sets", r.Alert, r.Record)
				jobs++
			}
		}
	}
	assert.Equal(t, 15, alerts)
	assert.Equal(t, 4, jobs, "LemExporterDown, LemExporterAbsent and the energy and throttling records select the job")
}

func TestChartExistingSecret(t *testing.T) {
	r := mustInstall(t, valueSets["existingSecret"])
	assert.Nil(t, r.Secret, "no Secret is created next to the operator's")
	assert.NotContains(t, r.Kinds, "Secret")
	c := r.container(t)
	assert.Equal(t, "lem-token", volumeOf(r.DaemonSet, "marker-token").Secret.SecretName)
	tokenFile, _ := argValue(c.Args, "markers.token-file")
	assert.Equal(t, "/etc/lem/markers/token", tokenFile)
	assert.NotContains(t, r.Manifest, "change-me")
}

func TestChartPVCRecording(t *testing.T) {
	r := mustInstall(t, valueSets["pvc recording"])
	require.NotNil(t, r.PVC)
	pvc, c := r.PVC, r.container(t)
	assert.Equal(t, "lem-exporter-recordings", pvc.Name)
	assert.Equal(t, "keep", pvc.Annotations["helm.sh/resource-policy"], "uninstalling keeps the recordings")
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, pvc.Spec.AccessModes)
	assert.Equal(t, "nfs", *pvc.Spec.StorageClassName)
	assert.Equal(t, "20Gi", pvc.Spec.Resources.Requests.Storage().String())

	assert.Equal(t, pvc.Name, volumeOf(r.DaemonSet, "record").PersistentVolumeClaim.ClaimName)
	m := mountOf(c, "record")
	require.NotNil(t, m)
	dir, _ := argValue(c.Args, "record.dir")
	assert.Equal(t, m.MountPath, dir)
	assert.Equal(t, "$(NODE_NAME)", m.SubPathExpr, "one directory per node: recordings never mix")
	age, _ := argValue(c.Args, "record.max-age")
	assert.Equal(t, "72h", age)
	assert.Equal(t, int64(65532), *r.DaemonSet.Spec.Template.Spec.SecurityContext.FSGroup)
	assert.Empty(t, r.DaemonSet.Spec.Template.Spec.InitContainers, "no root init container for a claim")

	// An existing claim is used, not created.
	r = mustInstall(t, `record: {enabled: true, volume: {type: persistentVolumeClaim, persistentVolumeClaim: {existingClaim: shared}}}`)
	assert.Nil(t, r.PVC)
	assert.Equal(t, "shared", volumeOf(r.DaemonSet, "record").PersistentVolumeClaim.ClaimName)
}

func TestChartHostPathRecording(t *testing.T) {
	r := mustInstall(t, valueSets["hostPath recording"])
	ds, c := r.DaemonSet, r.container(t)
	v := volumeOf(ds, "record")
	require.NotNil(t, v.HostPath)
	assert.Equal(t, "/data/lem", v.HostPath.Path)
	assert.Equal(t, corev1.HostPathDirectoryOrCreate, *v.HostPath.Type)
	dir, _ := argValue(c.Args, "record.dir")
	assert.Equal(t, mountOf(c, "record").MountPath, dir)
	rotate, _ := argValue(c.Args, "record.rotate")
	assert.Equal(t, "15m", rotate, "short files: closing one merges it in memory")
	// kubelet creates the directory as root: the init container hands it over, with CHOWN and nothing else.
	require.Len(t, ds.Spec.Template.Spec.InitContainers, 1)
	ic := ds.Spec.Template.Spec.InitContainers[0]
	assert.Equal(t, []string{"chown", "65532:65532", dir}, ic.Command)
	assert.Equal(t, []corev1.Capability{"CHOWN"}, ic.SecurityContext.Capabilities.Add)
	assert.Equal(t, []corev1.Capability{"ALL"}, ic.SecurityContext.Capabilities.Drop)
	assert.False(t, *ic.SecurityContext.AllowPrivilegeEscalation)
	assert.Equal(t, c.Image, ic.Image)

	r = mustInstall(t, `record: {enabled: true, volume: {hostPath: {fixPermissions: false}}}`)
	assert.Empty(t, r.DaemonSet.Spec.Template.Spec.InitContainers)
	assert.Equal(t, "/var/lib/lem-exporter", volumeOf(r.DaemonSet, "record").HostPath.Path)
}

func TestChartMonitorsOff(t *testing.T) {
	r := mustInstall(t, valueSets["monitors off"])
	assert.Equal(t, []string{"Secret", "Service", "DaemonSet"}, r.Kinds)
}

func TestChartPodMonitor(t *testing.T) {
	r := mustInstall(t, valueSets["podMonitor"])
	assert.Nil(t, r.ServiceMonitor)
	pm := r.PodMonitor
	require.NotNil(t, pm)
	assert.True(t, subset(pm.Spec.Selector.MatchLabels, r.DaemonSet.Spec.Template.Labels), "the PodMonitor selects the pods")
	assert.Equal(t, "kps", pm.Labels["release"])
	require.Len(t, pm.Spec.PodMetricsEndpoints, 1)
	ep := pm.Spec.PodMetricsEndpoints[0]
	assert.Equal(t, "metrics", *ep.Port)
	assert.Equal(t, monitoringv1.Duration("30s"), ep.Interval)
	assertJobAndInstance(t, ep.RelabelConfigs)
}

func TestChartHostPortAndRemoteWrite(t *testing.T) {
	r := mustInstall(t, valueSets["hostPort and remote write"])
	c := r.container(t)
	assert.Equal(t, int32(port), c.Ports[0].HostPort)
	assert.Equal(t, "http://mimir.mimir:8080/api/v1/push", envOf(c)["LEM_REMOTE_WRITE_URL"].Value)
	f, ok := argValue(c.Args, "remote-write.bearer-token-file")
	require.True(t, ok)
	assert.Equal(t, filepath.Join(mountOf(c, "remote-write-token").MountPath, "token"), f)
	assert.Equal(t, "mimir-token", volumeOf(r.DaemonSet, "remote-write-token").Secret.SecretName)
	assert.Equal(t, "ghcr.io/lem-energy/lem-exporter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", c.Image)
}

// Per-process energy is on by default, split per host PID; naming containers and pods shares the node's PID
// namespace and mounts the kubelet's log directories read-only; off, the exporter polls no process.
func TestChartProcesses(t *testing.T) {
	r := mustInstall(t, valueSets["defaults"])
	c := r.container(t)
	iv, _ := argValue(c.Args, "process-interval")
	assert.Equal(t, "500ms", iv)
	assert.False(t, r.DaemonSet.Spec.Template.Spec.HostPID)
	assert.Nil(t, mountOf(c, "pod-logs"))

	r = mustInstall(t, valueSets["process containers"])
	c = r.container(t)
	assert.True(t, r.DaemonSet.Spec.Template.Spec.HostPID)
	iv, _ = argValue(c.Args, "process-interval")
	assert.Equal(t, "1s", iv)
	ms, _ := argValue(c.Args, "processes.max-series")
	assert.Equal(t, "16", ms)
	for _, v := range []struct{ name, path string }{{"pod-logs", "/var/log/pods"}, {"container-logs", "/var/log/containers"}} {
		m := mountOf(c, v.name)
		require.NotNil(t, m, v.name)
		assert.True(t, m.ReadOnly, v.name)
		assert.Equal(t, v.path, m.MountPath)
		assert.Equal(t, v.path, volumeOf(r.DaemonSet, v.name).HostPath.Path)
	}

	assert.Nil(t, mountOf(c, "cri-socket"), "the runtime's socket only where named")
	assert.NotContains(t, envOf(c), "CONTAINER_RUNTIME_ENDPOINT")

	// The CRI runtime's socket, read-only, at its host path, which the exporter is told.
	r = mustInstall(t, valueSets["process containers cri"])
	c = r.container(t)
	m := mountOf(c, "cri-socket")
	require.NotNil(t, m)
	assert.True(t, m.ReadOnly)
	assert.Equal(t, "/run/crio/crio.sock", m.MountPath)
	v := volumeOf(r.DaemonSet, "cri-socket").HostPath
	assert.Equal(t, "/run/crio/crio.sock", v.Path)
	assert.Equal(t, corev1.HostPathSocket, *v.Type)
	assert.Equal(t, "/run/crio/crio.sock", envOf(c)["CONTAINER_RUNTIME_ENDPOINT"].Value)

	r = mustInstall(t, valueSets["processes off"])
	iv, _ = argValue(r.container(t).Args, "process-interval")
	assert.Equal(t, "0", iv)
}

// Values that cannot work fail the install with one line naming them.
func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ vals, want string }{
		{`podMonitor: {enabled: true}`, "serviceMonitor.enabled and podMonitor.enabled are both true"},
		{`image: {repository: lem-exporter}`, `image.repository "lem-exporter" names no registry`},
		{`image: {repository: lem-energy/lem-exporter}`, `image.repository "lem-energy/lem-exporter" names no registry`},
		{`port: nine`, "port"},
		{`serviceMonitor: {enable: true}`, "enable"},
		{`serviceMonitor: {interval: 15}`, "interval"},
		{`record: {volume: {type: nfs}}`, "type"},
		{`markers: {secretKey: "a/b"}`, "secretKey"},
		{`remoteWrite: {bearerTokenSecret: {name: t}}`, "remoteWrite.bearerTokenSecret.name is set but remoteWrite.url is empty"},
	} {
		_, err := install(t, tc.vals)
		if assert.Error(t, err, tc.vals) {
			assert.Contains(t, err.Error(), tc.want, tc.vals)
		}
	}
	// A registry with a port, or localhost, is a registry.
	for _, repo := range []string{"registry.local:5000/lem-exporter", "localhost/lem-exporter", "docker.io/lem/lem-exporter"} {
		r := mustInstall(t, "image: {repository: "+repo+", tag: t1}")
		assert.Equal(t, repo+":t1", r.container(t).Image)
	}
}

// secretClients serves lookup() from an in-memory object tracker holding the cluster's objects (client-go's
// dynamic fake: the same store Kubernetes' own controller tests use), so the upgrade path of the Secret template
// runs as against an API server.
type secretClients struct{ client dynamic.Interface }

func (s secretClients) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	if apiVersion != "v1" || kind != "Secret" {
		return nil, false, fmt.Errorf("unexpected lookup of %s %s", apiVersion, kind)
	}
	return s.client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}), true, nil
}

// renderAgainst renders the chart with lookup() answered from the given objects, as an upgrade does.
func renderAgainst(t *testing.T, objects ...runtime.Object) *rendered {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	require.NoError(t, err)
	vals, err := chartutil.ToRenderValues(chrt, map[string]any{},
		chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 2, IsUpgrade: true}, nil)
	require.NoError(t, err)
	sch := runtime.NewScheme()
	require.NoError(t, corev1.AddToScheme(sch))
	out, err := engine.RenderWithClientProvider(chrt, vals, secretClients{dynamicfake.NewSimpleDynamicClient(sch, objects...)})
	require.NoError(t, err)
	var buf bytes.Buffer
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range out {
			if strings.HasSuffix(k, ".yaml") && !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&buf, "---\n%s\n", out[name])
	}
	return decode(t, buf.String(), "")
}

func TestChartKeepsTokenAcrossUpgrades(t *testing.T) {
	existing := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "lem-exporter", Namespace: namespace},
		Data:       map[string][]byte{"marker-token": []byte("token-of-the-first-install")},
	}
	r := renderAgainst(t, existing)
	require.NotNil(t, r.Secret)
	assert.Equal(t, "token-of-the-first-install", string(r.Secret.Data["marker-token"]))

	// Another namespace's Secret of the same name is not this release's.
	other := existing.DeepCopy()
	other.Namespace = "elsewhere"
	r = renderAgainst(t, other)
	assert.Regexp(t, `^[A-Za-z0-9]{40}$`, string(r.Secret.Data["marker-token"]))

	// Without a cluster object, a fresh random token.
	r = renderAgainst(t)
	assert.Regexp(t, `^[A-Za-z0-9]{40}$`, string(r.Secret.Data["marker-token"]))
}
