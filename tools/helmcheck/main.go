// Command helmcheck reads `helm template` output on stdin and checks that
// the rendered objects hang together: every Deployment runs an image with
// probes on the ops port and the Kafka brokers set, every Service, PDB,
// ScaledObject and Ingress points at something that exists, and the admin's
// ADMIN_SERVICES names only headless Services of the release. It prints
// what it checked and exits 1 with every problem found.
//
//	helm template r deploy/helm/closedloop | go run ./tools/helmcheck
//
// With -alerts <rules file> <source dir> it checks a Prometheus rules file
// instead: every rule has an alert name, an expression, a severity and a
// summary, and every closedloop_* metric it uses is one the code registers
// (an OpenTelemetry instrument "closedloop.sink.dead_lettered" is exported
// as closedloop_sink_dead_lettered[_total|_seconds_bucket|…]).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/tools/internal/instruments"
)

type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec yaml.Node         `yaml:"spec"`
	Data map[string]string `yaml:"data"`
}

type seccomp struct {
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type deployment struct {
	Replicas *int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			SecurityContext struct {
				RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				seccomp      `yaml:",inline"`
			} `yaml:"securityContext"`
			AutomountServiceAccountToken *bool  `yaml:"automountServiceAccountToken"`
			ServiceAccountName           string `yaml:"serviceAccountName"`
			Volumes                      []struct {
				Name   string `yaml:"name"`
				Secret *struct {
					SecretName string `yaml:"secretName"`
				} `yaml:"secret"`
			} `yaml:"volumes"`
			Containers []struct {
				Name     string   `yaml:"name"`
				Image    string   `yaml:"image"`
				Args     []string `yaml:"args"`
				Security struct {
					RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
					AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
					ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
					Capabilities             struct {
						Drop []string `yaml:"drop"`
					} `yaml:"capabilities"`
					seccomp `yaml:",inline"`
				} `yaml:"securityContext"`
				ReadinessProbe *struct {
					HTTPGet struct {
						Path string `yaml:"path"`
						Port string `yaml:"port"`
					} `yaml:"httpGet"`
				} `yaml:"readinessProbe"`
				LivenessProbe *struct{} `yaml:"livenessProbe"`
				Env           []struct {
					Name      string `yaml:"name"`
					Value     string `yaml:"value"`
					ValueFrom *struct {
						SecretKeyRef *struct {
							Name string `yaml:"name"`
						} `yaml:"secretKeyRef"`
						ResourceFieldRef *struct {
							Resource string `yaml:"resource"`
							Divisor  string `yaml:"divisor"`
						} `yaml:"resourceFieldRef"`
					} `yaml:"valueFrom"`
				} `yaml:"env"`
				VolumeMounts []struct {
					Name      string `yaml:"name"`
					MountPath string `yaml:"mountPath"`
				} `yaml:"volumeMounts"`
				Ports []struct {
					Name string `yaml:"name"`
				} `yaml:"ports"`
			} `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "-alerts" {
		if err := checkAlerts(os.Args[2], os.Args[3], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "helmcheck:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "helmcheck:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := yaml.NewDecoder(in)
	var objs []object
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("not YAML: %w", err)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	problems = append(problems, checkDashboards(objs)...)
	kafkaProblems, kafkaSecrets, secured := checkKafka(objs)
	problems = append(problems, kafkaProblems...)
	deploys, services, counts := map[string]map[string]string{}, map[string]bool{}, map[string]int{}
	replicas := map[string]bool{}
	var admin []string
	secretRefs := kafkaSecrets // [workload, secret]
	pprofOn := os.Getenv("HELMCHECK_PPROF") == "true"
	for _, o := range objs {
		counts[o.Kind]++
		if o.Kind == "Service" {
			services[o.Metadata.Name] = true
		}
		if o.Kind != "Deployment" {
			continue
		}
		var d deployment
		if err := o.Spec.Decode(&d); err != nil {
			bad("Deployment %s: %v", o.Metadata.Name, err)
			continue
		}
		for k, v := range d.Selector.MatchLabels {
			if d.Template.Metadata.Labels[k] != v {
				bad("Deployment %s: selector %s=%s does not match its pods", o.Metadata.Name, k, v)
			}
		}
		deploys[o.Metadata.Name] = d.Selector.MatchLabels
		replicas[o.Metadata.Name] = d.Replicas != nil
		if len(d.Template.Spec.Containers) != 1 {
			bad("Deployment %s: %d containers, want 1", o.Metadata.Name, len(d.Template.Spec.Containers))
			continue
		}
		c := d.Template.Spec.Containers[0]
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name
				secretRefs = append(secretRefs, [2]string{o.Metadata.Name, e.ValueFrom.SecretKeyRef.Name})
			}
			if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
				env[e.Name] = "resource:" + e.ValueFrom.ResourceFieldRef.Resource + "/" + e.ValueFrom.ResourceFieldRef.Divisor
			}
		}
		// A Go processor per CPU requested, rounded up (docs/benchmarks.md),
		// unless the values set GOMAXPROCS themselves.
		if v := env["GOMAXPROCS"]; v == "" {
			bad("Deployment %s: no GOMAXPROCS (from requests.cpu, or set in its env)", o.Metadata.Name)
		} else if r, ok := strings.CutPrefix(v, "resource:"); ok && r != "requests.cpu/1" {
			bad("Deployment %s: GOMAXPROCS from %s, want requests.cpu with divisor 1 (rounded up)", o.Metadata.Name, r)
		}
		// Every gRPC port requires the service token: from a Secret, never a literal.
		if !strings.HasPrefix(env["CLOSEDLOOP_SERVICE_TOKEN"], "secret:") {
			bad("Deployment %s: CLOSEDLOOP_SERVICE_TOKEN must come from a Secret (secretKeyRef)", o.Metadata.Name)
		}
		if env["OPS_PPROF"] == "true" && !pprofOn {
			bad("Deployment %s: profiles are on (OPS_PPROF) though ops.pprof is not", o.Metadata.Name)
		}
		if _, ok := env["ADMIN_SERVICES"]; ok {
			// The admin API: TLS, or plaintext explicitly allowed.
			if env["ADMIN_TLS_CERT"] == "" && env["ADMIN_ALLOW_PLAINTEXT"] != "true" {
				bad("Deployment %s: the admin has neither ADMIN_TLS_CERT nor ADMIN_ALLOW_PLAINTEXT", o.Metadata.Name)
			}
			if env["ADMIN_TLS_CERT"] != "" {
				mounted := map[string]bool{}
				for _, m := range c.VolumeMounts {
					mounted[m.Name] = true
				}
				found := false
				for _, v := range d.Template.Spec.Volumes {
					if v.Secret != nil && mounted[v.Name] {
						found = true
						secretRefs = append(secretRefs, [2]string{o.Metadata.Name, v.Secret.SecretName})
					}
				}
				if !found {
					bad("Deployment %s: ADMIN_TLS_CERT is set but no Secret volume is mounted", o.Metadata.Name)
				}
			}
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		switch {
		case c.Image == "" || strings.HasSuffix(c.Image, ":"):
			bad("Deployment %s: no image tag", o.Metadata.Name)
		case c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || !ports[c.ReadinessProbe.HTTPGet.Port]:
			bad("Deployment %s: readiness must probe /readyz on a declared port", o.Metadata.Name)
		case c.LivenessProbe == nil:
			bad("Deployment %s: no liveness probe", o.Metadata.Name)
		case env["KAFKA_BROKERS"] == "" || env["PIPELINE_CONFIG"] == "":
			bad("Deployment %s: KAFKA_BROKERS and PIPELINE_CONFIG must be set", o.Metadata.Name)
		}
		if v, ok := env["ADMIN_SERVICES"]; ok {
			admin = strings.Split(v, ",")
		}
	}
	// Secrets the chart makes (or cert-manager will) must be the ones used;
	// the user's own (secretsFrom, postgres, serviceToken.secret) are listed
	// in HELMCHECK_EXTERNAL_SECRETS.
	made := map[string]bool{}
	for _, o := range objs {
		if o.Kind == "Secret" || o.Kind == "Certificate" {
			made[o.Metadata.Name] = true
		}
	}
	for _, n := range strings.Split(os.Getenv("HELMCHECK_EXTERNAL_SECRETS"), ",") {
		made[n] = true
	}
	for _, r := range secretRefs {
		if !made[r[1]] {
			bad("Deployment %s uses Secret %s, which the chart does not create", r[0], r[1])
		}
	}
	scaled := map[string]bool{}
	triggerAuths := map[string]bool{}
	for _, o := range objs {
		if o.Kind == "TriggerAuthentication" {
			triggerAuths[o.Metadata.Name] = true
		}
	}
	matches := func(sel map[string]string) bool {
		for _, labels := range deploys {
			ok := len(sel) > 0
			for k, v := range sel {
				ok = ok && labels[k] == v
			}
			if ok {
				return true
			}
		}
		return false
	}
	for _, o := range objs {
		switch o.Kind {
		case "Service", "PodDisruptionBudget":
			var s struct {
				Selector    map[string]string `yaml:"selector"`
				MatchLabels map[string]string `yaml:"-"`
			}
			_ = o.Spec.Decode(&s)
			sel := s.Selector
			if o.Kind == "PodDisruptionBudget" {
				var p struct {
					Selector struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"selector"`
				}
				_ = o.Spec.Decode(&p)
				sel = p.Selector.MatchLabels
			}
			if !matches(sel) {
				bad("%s %s selects no Deployment's pods", o.Kind, o.Metadata.Name)
			}
		case "NetworkPolicy":
			var np struct {
				PodSelector struct {
					MatchLabels map[string]string `yaml:"matchLabels"`
				} `yaml:"podSelector"`
			}
			_ = o.Spec.Decode(&np)
			if !matches(np.PodSelector.MatchLabels) {
				bad("NetworkPolicy %s selects no Deployment's pods", o.Metadata.Name)
			}
		case "ScaledObject":
			var s struct {
				ScaleTargetRef struct {
					Name string `yaml:"name"`
				} `yaml:"scaleTargetRef"`
				Max      int `yaml:"maxReplicaCount"`
				Triggers []struct {
					Metadata          map[string]string `yaml:"metadata"`
					AuthenticationRef struct {
						Name string `yaml:"name"`
					} `yaml:"authenticationRef"`
				} `yaml:"triggers"`
			}
			_ = o.Spec.Decode(&s)
			if _, ok := deploys[s.ScaleTargetRef.Name]; !ok {
				bad("ScaledObject %s scales %q, which is no Deployment", o.Metadata.Name, s.ScaleTargetRef.Name)
			}
			if replicas[s.ScaleTargetRef.Name] {
				bad("Deployment %s sets replicas though ScaledObject %s owns them (every upgrade would reset the scale)", s.ScaleTargetRef.Name, o.Metadata.Name)
			}
			for _, tr := range s.Triggers {
				if secured && !triggerAuths[tr.AuthenticationRef.Name] {
					bad("ScaledObject %s: the brokers need TLS/SASL but a kafka trigger names no rendered TriggerAuthentication (%q)", o.Metadata.Name, tr.AuthenticationRef.Name)
				}
				scaled[tr.Metadata["consumerGroup"]] = true
				if tr.Metadata["consumerGroup"] == "" || tr.Metadata["topic"] == "" || tr.Metadata["bootstrapServers"] == "" {
					bad("ScaledObject %s: a kafka trigger needs bootstrapServers, consumerGroup and topic", o.Metadata.Name)
				}
			}
		case "Ingress":
			var s struct {
				Rules []struct {
					HTTP struct {
						Paths []struct {
							Backend struct {
								Service struct {
									Name string `yaml:"name"`
								} `yaml:"service"`
							} `yaml:"backend"`
						} `yaml:"paths"`
					} `yaml:"http"`
				} `yaml:"rules"`
			}
			_ = o.Spec.Decode(&s)
			for _, r := range s.Rules {
				for _, p := range r.HTTP.Paths {
					if !services[p.Backend.Service.Name] {
						bad("Ingress %s routes to %q, which is no Service", o.Metadata.Name, p.Backend.Service.Name)
					}
				}
			}
		}
	}
	for _, a := range admin {
		name, addr, _ := strings.Cut(a, "=")
		host := strings.TrimPrefix(strings.Split(addr, ":")[0], "dns+")
		if !services[host] {
			bad("ADMIN_SERVICES: %s at %q, which is no Service", name, addr)
		}
	}
	var kinds []string
	for k, n := range counts {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	fmt.Fprintf(out, "helmcheck: %s; admin reaches %d services\n", strings.Join(kinds, ", "), len(admin))
	if counts["Deployment"] == 0 {
		bad("no Deployment rendered")
	}
	// HELMCHECK_GROUPS: consumer groups a ScaledObject must scale (the
	// destinations of the pipeline in the values).
	for _, g := range strings.Split(os.Getenv("HELMCHECK_GROUPS"), ",") {
		if g != "" && !scaled[g] {
			bad("no ScaledObject scales consumer group %s", g)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n  "))
	}
	return nil
}

// checkDashboards: with HELMCHECK_DASHBOARDS=on, a ConfigMap labelled
// grafana_dashboard carries every file of deploy/grafana/dashboards,
// unchanged; without it, none is rendered.
func checkDashboards(objs []object) []string {
	var problems []string
	want, _ := filepath.Glob(filepath.Join("..", "deploy", "grafana", "dashboards", "*.json"))
	found := 0
	for _, o := range objs {
		if o.Kind != "ConfigMap" || o.Metadata.Labels["grafana_dashboard"] == "" {
			continue
		}
		for _, path := range want {
			b, err := os.ReadFile(path)
			if err != nil {
				return []string{err.Error()}
			}
			key := filepath.Base(path)
			if got, ok := o.Data[key]; !ok || strings.TrimSpace(got) != strings.TrimSpace(string(b)) {
				problems = append(problems, fmt.Sprintf("ConfigMap %s: %s missing or not the file in deploy/grafana/dashboards", o.Metadata.Name, key))
			}
			found++
		}
	}
	// The rules and dashboards select services by closedloop_service.
	for _, o := range objs {
		if o.Kind != "ServiceMonitor" {
			continue
		}
		var sm struct {
			Endpoints []struct {
				Relabelings []struct {
					SourceLabels []string `yaml:"sourceLabels"`
					TargetLabel  string   `yaml:"targetLabel"`
				} `yaml:"relabelings"`
			} `yaml:"endpoints"`
		}
		_ = o.Spec.Decode(&sm)
		for _, e := range sm.Endpoints {
			ok := false
			for _, r := range e.Relabelings {
				ok = ok || r.TargetLabel == "closedloop_service" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_service_label_app_kubernetes_io_name"})
			}
			if !ok {
				problems = append(problems, fmt.Sprintf("ServiceMonitor %s: an endpoint does not set closedloop_service (the alert rules and dashboards select by it)", o.Metadata.Name))
			}
		}
	}
	switch on := os.Getenv("HELMCHECK_DASHBOARDS") == "on"; {
	case on && (len(want) == 0 || found != len(want)):
		problems = append(problems, fmt.Sprintf("want a grafana_dashboard ConfigMap with the %d dashboards, found %d", len(want), found))
	case !on && found > 0:
		problems = append(problems, "a dashboards ConfigMap is rendered though metrics.grafanaDashboards.enabled is off")
	}
	return problems
}

// RunbookBase is where every alert's runbook_url points: a heading of one
// of the docs (GitHub's anchor of it).
const RunbookBase = "https://github.com/closedloop/closedloop/blob/main/"

func checkAlerts(rulesFile, srcDir string, out io.Writer) error {
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		return err
	}
	// The chart ships the same rules (its PrometheusRule option).
	chartCopy := filepath.Join(srcDir, "deploy", "helm", "closedloop", "files", "closedloop.rules.yaml")
	if c, err := os.ReadFile(chartCopy); err != nil || !bytes.Equal(c, b) {
		return fmt.Errorf("%s is not a copy of %s: cp %s %s", chartCopy, rulesFile, rulesFile, chartCopy)
	}
	var doc struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %w", rulesFile, err)
	}
	ins, err := instruments.Scan(srcDir)
	if err != nil {
		return err
	}
	known, err := instruments.SeriesSet(ins)
	if err != nil {
		return err
	}
	recorded := map[string]bool{}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	anchors := map[string]map[string]bool{} // doc file -> anchors
	var problems []string
	alerts, records, used := 0, 0, map[string]bool{}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if r.Record != "" {
				records++
				name = r.Record
			} else {
				alerts++
				switch {
				case r.Alert == "" || r.Expr == "":
					problems = append(problems, fmt.Sprintf("a rule of group %s has neither alert nor record, or no expr", g.Name))
				case r.Labels["severity"] != "critical" && r.Labels["severity"] != "warning" && r.Labels["severity"] != "info":
					problems = append(problems, fmt.Sprintf("alert %s: severity %q (use critical, warning or info)", r.Alert, r.Labels["severity"]))
				}
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if r.Annotations[a] == "" {
						problems = append(problems, fmt.Sprintf("alert %s: annotations.%s is required", r.Alert, a))
					}
				}
				if u := r.Annotations["runbook_url"]; u != "" {
					if p := checkRunbook(srcDir, u, anchors); p != "" {
						problems = append(problems, fmt.Sprintf("alert %s: %s", r.Alert, p))
					}
				}
			}
			for _, m := range instruments.MetricsIn(r.Expr) {
				used[m] = true
				if _, ok := known[m]; !ok && !recorded[m] && !instruments.External(m) {
					problems = append(problems, fmt.Sprintf("rule %s uses %s: no instrument of the code makes that series", name, m))
				}
			}
		}
	}
	fmt.Fprintf(out, "helmcheck: %d alert rules and %d recording rules over %d series, all made by the code or the rules; every runbook exists\n", alerts, records, len(used))
	if alerts == 0 {
		problems = append(problems, "no rules")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n  "))
	}
	return nil
}

// checkRunbook checks that u is RunbookBase + docs/<file>.md#<anchor of a
// heading of that file>.
func checkRunbook(srcDir, u string, anchors map[string]map[string]bool) string {
	rest, ok := strings.CutPrefix(u, RunbookBase)
	file, anchor, hasAnchor := strings.Cut(rest, "#")
	if !ok || !hasAnchor || !strings.HasPrefix(file, "docs/") || !strings.HasSuffix(file, ".md") {
		return fmt.Sprintf("runbook_url %q is not %sdocs/<page>.md#<heading>", u, RunbookBase)
	}
	if anchors[file] == nil {
		b, err := os.ReadFile(filepath.Join(srcDir, file))
		if err != nil {
			return fmt.Sprintf("runbook_url %q: %v", u, err)
		}
		anchors[file] = map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			if h, ok := strings.CutPrefix(line, "#"); ok {
				anchors[file][GitHubAnchor(strings.TrimLeft(h, "#"))] = true
			}
		}
	}
	if !anchors[file][anchor] {
		return fmt.Sprintf("runbook_url %q: %s has no heading with that anchor", u, file)
	}
	return ""
}

// GitHubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// punctuation dropped, spaces to hyphens.
func GitHubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// checkKafka checks the Kafka settings of every workload (Deployments and
// the topics Job): the same brokers, prefix and security everywhere; a SASL
// password and TLS files read from mounted Secrets (never a literal); the
// topics Job a pre-install/pre-upgrade hook running `topics apply` (unless
// HELMCHECK_NO_TOPICS_JOB). It returns the problems, the Secrets used
// ([workload, secret]) and whether the brokers need TLS or SASL.
func checkKafka(objs []object) (problems []string, secrets [][2]string, secured bool) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	shared := []string{"KAFKA_BROKERS", "CLOSEDLOOP_TOPIC_PREFIX", "KAFKA_TOPIC_PARTITIONS", "KAFKA_TOPIC_REPLICATION",
		"KAFKA_TLS_ENABLED", "KAFKA_TLS_CA_FILE", "KAFKA_SASL_MECHANISM"}
	var first map[string]string
	firstName := ""
	jobs := 0
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "Job" {
			continue
		}
		var d deployment
		if err := o.Spec.Decode(&d); err != nil || len(d.Template.Spec.Containers) == 0 {
			continue
		}
		c := d.Template.Spec.Containers[0]
		problems = append(problems, restricted(o.Kind+" "+o.Metadata.Name, d)...)
		if o.Kind == "Job" {
			jobs++
			if strings.Join(c.Args, " ") != "topics apply" {
				bad("Job %s does not run `topics apply`: %v", o.Metadata.Name, c.Args)
			}
			hook := o.Metadata.Annotations["helm.sh/hook"]
			if !strings.Contains(hook, "pre-install") || !strings.Contains(hook, "pre-upgrade") {
				bad("Job %s is not a pre-install,pre-upgrade hook (%q): the topics must exist before the services start or change", o.Metadata.Name, hook)
			}
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		secretAt := map[string]string{} // mount path -> Secret
		vols := map[string]string{}
		for _, v := range d.Template.Spec.Volumes {
			if v.Secret != nil {
				vols[v.Name] = v.Secret.SecretName
			}
		}
		for _, m := range c.VolumeMounts {
			if s, ok := vols[m.Name]; ok {
				secretAt[strings.TrimSuffix(m.MountPath, "/")] = s
			}
		}
		fromSecret := func(name, path string) {
			if s, ok := secretAt[filepath.Dir(path)]; ok {
				secrets = append(secrets, [2]string{o.Metadata.Name, s})
				return
			}
			bad("%s %s: %s=%s is not in a mounted Secret", o.Kind, o.Metadata.Name, name, path)
		}
		if env["KAFKA_SASL_MECHANISM"] != "" {
			secured = true
			path, ok := strings.CutPrefix(env["KAFKA_SASL_PASSWORD"], "file:")
			if !ok || env["KAFKA_SASL_USERNAME"] == "" {
				bad("%s %s: SASL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD=file:<a mounted Secret>", o.Kind, o.Metadata.Name)
			} else {
				fromSecret("KAFKA_SASL_PASSWORD", path)
			}
		}
		if env["KAFKA_TLS_ENABLED"] == "true" {
			secured = true
		}
		for _, f := range []string{"KAFKA_TLS_CA_FILE", "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE"} {
			if env[f] != "" {
				fromSecret(f, env[f])
			}
		}
		if first == nil {
			first, firstName = env, o.Kind+" "+o.Metadata.Name
			continue
		}
		for _, k := range shared {
			if env[k] != first[k] {
				bad("%s %s: %s=%q, but %s has %q: every workload must reach the same Kafka the same way", o.Kind, o.Metadata.Name, k, env[k], firstName, first[k])
			}
		}
	}
	if jobs == 0 && os.Getenv("HELMCHECK_NO_TOPICS_JOB") != "true" {
		bad("no topics Job rendered: `admin topics apply` must run before the services")
	}
	return problems, secrets, secured
}

// restricted lists how a workload's pod misses Pod Security "restricted":
// non-root, seccomp RuntimeDefault, no privilege escalation, every
// capability dropped; and no service account token mounted (the services
// never call the Kubernetes API).
func restricted(name string, d deployment) []string {
	var out []string
	ps := d.Template.Spec.SecurityContext
	if ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile.Type != "RuntimeDefault" {
		out = append(out, name+": the pod must run as non-root with seccompProfile RuntimeDefault")
	}
	if d.Template.Spec.AutomountServiceAccountToken == nil || *d.Template.Spec.AutomountServiceAccountToken || d.Template.Spec.ServiceAccountName == "" {
		out = append(out, name+": a service account of its own, without its token mounted")
	}
	for _, c := range d.Template.Spec.Containers {
		sc := c.Security
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			out = append(out, name+": container "+c.Name+" must not escalate privileges, must drop ALL capabilities and have a read-only root filesystem")
		}
	}
	return out
}
