package repocheck

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type composeService struct {
	Image       string         `yaml:"image"`
	Build       map[string]any `yaml:"build"`
	Command     []string       `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck map[string]any `yaml:"healthcheck"`
	Profiles    []string       `yaml:"profiles"`
	Restart     string         `yaml:"restart"`
}

// There is no Docker engine here, so this is the guard of
// docker-compose.yml: every closedloop service is built from
// deploy/docker from its own command, has every variable its code requires
// (and every secret the pipeline file references where it is read), waits
// for the topics (made by `admin topics apply` in kafka-init) and for what
// it uses, and has a health check; the admin knows every service's gRPC
// address and reaches the ingress inside the network.
func TestTheComposeFileGivesEveryServiceWhatItNeeds(t *testing.T) {
	r := root(t)
	b, err := os.ReadFile(filepath.Join(r, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	// The code's own knowledge: required variables, default gRPC ports.
	requiredRE := regexp.MustCompile(`Required\("([A-Z_]+)"`)
	portsRE := regexp.MustCompile(`LoadCommon\(e, (\d+), (\d+)\)`)
	common := []string{"KAFKA_BROKERS", "CLOSEDLOOP_SERVICE_TOKEN", "PIPELINE_CONFIG"}
	dirs, _ := os.ReadDir(filepath.Join(r, "services"))
	ours := map[string]bool{}
	grpcPort := map[string]string{}
	required := map[string][]string{}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		name := d.Name()
		if _, err := os.Stat(filepath.Join(r, "services", name, "cmd", name)); err != nil {
			continue
		}
		ours[name] = true
		src, _ := os.ReadFile(filepath.Join(r, "services", name, "internal", "app", "app.go"))
		for _, m := range requiredRE.FindAllStringSubmatch(string(src), -1) {
			required[name] = append(required[name], m[1])
		}
		if m := portsRE.FindStringSubmatch(string(src)); m != nil {
			grpcPort[name] = m[2]
		}
	}
	pipelineRefs := pipelineEnvRefs(t, filepath.Join(r, "deploy", "compose", "pipeline.yaml"))

	init, ok := compose.Services["kafka-init"]
	initArgs, _ := init.Build["args"].(map[string]any)
	if !ok || strings.Join(init.Command, " ") != "topics apply" || initArgs["SERVICE"] != "admin" {
		t.Errorf("kafka-init must run `admin topics apply` from the admin image: %+v", init)
	}
	var withGRPC []string
	for name, svc := range compose.Services {
		if !ours[name] {
			continue
		}
		if name != "ingress" && name != "admin" && grpcPort[name] != "" {
			withGRPC = append(withGRPC, name)
		}
		args, _ := svc.Build["args"].(map[string]any)
		if svc.Build["dockerfile"] != "deploy/docker/Dockerfile" || args["SERVICE"] != name {
			t.Errorf("%s: not built from deploy/docker/Dockerfile with SERVICE=%s: %v", name, name, svc.Build)
		}
		for _, v := range append(append([]string(nil), common...), required[name]...) {
			if val, set := svc.Environment[v]; !set || val == "" {
				t.Errorf("%s: %s is required by its code and not set", name, v)
			}
		}
		if svc.DependsOn["kafka-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s: does not wait for kafka-init (the topics) to complete", name)
		}
		for dep, c := range svc.DependsOn {
			if c.Condition == "" {
				t.Errorf("%s: depends_on %s without a condition", name, dep)
			}
		}
		for v, dep := range map[string]string{"REDIS_URL": "redis", "DATABASE_URL": "postgres"} {
			if _, uses := svc.Environment[v]; uses && svc.DependsOn[dep].Condition != "service_healthy" {
				t.Errorf("%s: uses %s but does not wait for %s to be healthy", name, v, dep)
			}
		}
		if len(svc.Healthcheck) == 0 || svc.Restart == "" {
			t.Errorf("%s: no health check or restart policy", name)
		}
	}
	admin := compose.Services["admin"]
	for _, name := range withGRPC {
		if list, _ := admin.Environment["ADMIN_SERVICES"].(string); !strings.Contains(list, name+"="+name+":"+grpcPort[name]) {
			t.Errorf("ADMIN_SERVICES does not list %s=%s:%s", name, name, grpcPort[name])
		}
	}
	if u, _ := admin.Environment["ADMIN_INGRESS_URL"].(string); !strings.HasPrefix(u, "http://ingress:") {
		t.Errorf("ADMIN_INGRESS_URL %q does not reach the ingress inside the network (test events)", u)
	}
	for section, refs := range pipelineRefs {
		readers := []string{"admin"}
		if section == "sources" {
			readers = append(readers, "ingress")
		}
		for _, ref := range refs {
			for _, svc := range readers {
				if _, set := compose.Services[svc].Environment[ref]; !set {
					t.Errorf("%s: the pipeline file's %s reference env:%s is not set", svc, section, ref)
				}
			}
		}
	}
}

// pipelineEnvRefs are the env:NAME references of the pipeline file, by its
// top-level section.
func pipelineEnvRefs(t *testing.T, path string) map[string][]string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	var walk func(section string, v any)
	walk = func(section string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, c := range x {
				walk(section, c)
			}
		case []any:
			for _, c := range x {
				walk(section, c)
			}
		case string:
			if ref, ok := strings.CutPrefix(x, "env:"); ok {
				out[section] = append(out[section], ref)
			}
		}
	}
	for k, v := range doc {
		walk(k, v)
	}
	for k := range out {
		sort.Strings(out[k])
	}
	return out
}

// The observability profile scrapes every closedloop service of the
// compose file under the closedloop_service label the rules and dashboards
// select by, loads the rules, and provisions the dashboards from the path
// Grafana's provider reads.
func TestTheComposeObservabilityProfileSeesEveryService(t *testing.T) {
	r := root(t)
	var compose struct {
		Services map[string]struct {
			Build    map[string]any `yaml:"build"`
			Command  []string       `yaml:"command"`
			Volumes  []string       `yaml:"volumes"`
			Profiles []string       `yaml:"profiles"`
		} `yaml:"services"`
	}
	b, err := os.ReadFile(filepath.Join(r, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err = os.ReadFile(filepath.Join(r, "deploy/compose/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatal(err)
	}
	scraped := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				if host, _, _ := strings.Cut(tg, ":"); host == st.Labels["closedloop_service"] {
					scraped[host] = true
				}
			}
		}
	}
	for name, s := range compose.Services {
		if s.Build != nil && len(s.Command) == 0 && !scraped[name] { // a long-running service (not a one-shot job)
			t.Errorf("deploy/compose/prometheus.yml does not scrape %s with closedloop_service=%s", name, name)
		}
	}
	mounted := func(svc, hostPath, inside string) {
		for _, v := range compose.Services[svc].Volumes {
			if strings.HasPrefix(v, "./"+hostPath+":"+inside) {
				return
			}
		}
		t.Errorf("compose service %s does not mount ./%s at %s", svc, hostPath, inside)
	}
	mounted("prometheus", "deploy/alerts", "/etc/prometheus/rules")
	if len(prom.RuleFiles) != 1 || prom.RuleFiles[0] != "/etc/prometheus/rules/closedloop.rules.yaml" {
		t.Errorf("prometheus rule_files = %v", prom.RuleFiles)
	}
	mounted("grafana", "deploy/grafana/dashboards", "/var/lib/grafana/dashboards/closedloop")
	mounted("grafana", "deploy/grafana/provisioning", "/etc/grafana/provisioning")
	p, err := os.ReadFile(filepath.Join(r, "deploy/grafana/provisioning/dashboards/closedloop.yaml"))
	if err != nil || !strings.Contains(string(p), "path: /var/lib/grafana/dashboards/closedloop\n") {
		t.Errorf("the Grafana dashboard provider does not read /var/lib/grafana/dashboards/closedloop (%v)", err)
	}
}
