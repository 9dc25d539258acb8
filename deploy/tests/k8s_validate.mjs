// Offline checks of the Kubernetes manifests in deploy/k8s (run by k8s_test.sh after `npm ci`):
//
//   node k8s_validate.mjs K8S_DIR [--bin BUILD_DIR/bin]
//
// For every overlay in K8S_DIR/overlays (each must be listed in OVERLAYS below, with what it must contain):
//  1. `kubectl kustomize` renders it;
//  2. every object passes its OpenAPI schema (kubernetes-models; the ServiceMonitor with the prometheus-operator
//     models generated from its CRD);
//  3. every object type-checks as a TypeScript literal of its model's interface with tsc (catches unknown and
//     misspelt fields, which the schemas let through);
//  4. llmc's own rules: one coordinator replica with its volume claim, probes on /healthz at the port --http-listen
//     names, workers dialling a Service that reaches the coordinator's gRPC port, the token file mounted where the
//     flags point, every volume/secret/config map/claim reference resolving, the restricted Pod Security profile,
//     resources, NetworkPolicies and the ServiceMonitor selecting what exists, the GPU and S3 specifics;
//  5. with --bin, every flag in the containers' args exists in `llmc-server --help` / `llmc-worker --help`.
//  6. the example of an own overlay (deploy/k8s/example) with a generated worker token: the token replaces the
//     placeholder in the one Secret both pods mount, images come from a registry, and 2-5 hold for it.
// The checks are also run on broken copies of a rendered overlay, which they must reject (a check that cannot
// fail is no check). Prints one line per overlay and "N passed, N failed"; exits non-zero on any failure.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));

// What each overlay must be. A new overlay must be added here, or the test fails.
const OVERLAYS = {
  cpu: { gpu: false, storage: "shared" },
  gpu: { gpu: true, storage: "shared" },
  s3: { gpu: false, storage: "s3" },
  "gpu-s3": { gpu: true, storage: "s3" },
};
const NAMESPACE = "llmc";
const SERVER_TOKENS_DIR = "/run/secrets/llmc"; // the server image's LLMC_TOKENS_DIR
const RESTRICTED_VOLUME_TYPES = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
  "projected", "secret"];

// ---------------------------------------------------------------------------------------------------------------
// Models: apiVersion + kind -> module and interface name.
function modelModule(apiVersion, kind) {
  if (apiVersion === "monitoring.coreos.com/v1")
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

async function schemaErrors(obj) {
  let mod;
  try {
    mod = await import(modelModule(obj.apiVersion, obj.kind));
  } catch (e) {
    return [`no model for ${obj.apiVersion} ${obj.kind}`];
  }
  const Model = mod[obj.kind];
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return [`schema: ${e.message}`];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Quantities (enough for cpu, memory and extended resources).
function quantity(q) {
  const s = String(q);
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(s);
  if (!m) return NaN;
  const mult = { "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  return m[2] in mult ? Number(m[1]) * mult[m[2]] : NaN;
}

function matches(selector, labels) {
  if (!selector) return false;
  for (const [k, v] of Object.entries(selector.matchLabels || {})) if ((labels || {})[k] !== v) return false;
  for (const e of selector.matchExpressions || []) {
    const has = labels && e.key in labels;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
    if (e.operator === "In" && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(labels[e.key])) return false;
  }
  return true;
}

function argValues(args, flag) {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag && i + 1 < args.length) out.push(args[i + 1]);
    else if (args[i].startsWith(flag + "=")) out.push(args[i].slice(flag.length + 1));
  }
  return out;
}

// kustomize writes long base64 values of Secrets wrapped over several lines; the API server's base64 decoder
// ignores the line breaks, the schema's "byte" format does not: compare them as the server reads them.
function render(dir) {
  const text = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const docs = parseAllDocuments(text);
  const errors = docs.flatMap((d) => d.errors.map((x) => `yaml: ${x.message}`));
  const objs = docs.map((d) => d.toJS()).filter(Boolean);
  for (const o of objs)
    if (o.kind === "Secret") for (const k of Object.keys(o.data || {})) o.data[k] = String(o.data[k]).replace(/\s+/g, "");
  return { objs, errors };
}

const portOf = (addr) => Number(addr.slice(addr.lastIndexOf(":") + 1));
const hostOf = (addr) => addr.slice(0, addr.lastIndexOf(":"));

// ---------------------------------------------------------------------------------------------------------------
// llmc's rules for one rendered overlay. Returns a list of problems.
function llmcErrors(objs, expect) {
  const errs = [];
  const err = (m) => errs.push(m);
  const all = (kind) => objs.filter((o) => o.kind === kind);
  const one = (kind, name) => objs.find((o) => o.kind === kind && o.metadata?.name === name);
  const byPrefix = (kind, name) => objs.find((o) => o.kind === kind && (o.metadata?.name === name ||
    (o.metadata?.name || "").startsWith(name + "-")));

  for (const o of objs)
    if (o.kind !== "Namespace" && o.metadata?.namespace !== NAMESPACE)
      err(`${o.kind} ${o.metadata?.name}: namespace is ${o.metadata?.namespace}, not ${NAMESPACE}`);

  const sts = all("StatefulSet");
  const deps = all("Deployment");
  const server = one("StatefulSet", "llmc-server");
  const worker = one("Deployment", "llmc-worker");
  if (sts.length !== 1 || !server) err("expected exactly one StatefulSet, llmc-server");
  if (deps.length !== 1 || !worker) err("expected exactly one Deployment, llmc-worker");
  if (!server || !worker) return errs;
  if (server.spec.replicas !== 1) err(`StatefulSet llmc-server: replicas ${server.spec.replicas}; the coordinator runs as one replica`);

  const secrets = all("Secret"), configMaps = all("ConfigMap"), pvcs = all("PersistentVolumeClaim");
  const services = all("Service");

  // Pod templates: security, resources, references.
  for (const w of [server, worker]) {
    const where = `${w.kind} ${w.metadata.name}`;
    const pod = w.spec.template.spec;
    const podLabels = w.spec.template.metadata?.labels || {};
    if (!matches(w.spec.selector, podLabels)) err(`${where}: selector does not match the pod labels`);
    const psc = pod.securityContext || {};
    if (psc.runAsNonRoot !== true) err(`${where}: pod securityContext.runAsNonRoot is not true`);
    if (!psc.runAsUser) err(`${where}: pod securityContext.runAsUser is not a non-zero uid`);
    if (psc.seccompProfile?.type !== "RuntimeDefault") err(`${where}: seccompProfile is not RuntimeDefault`);
    if (pod.automountServiceAccountToken !== false) err(`${where}: automountServiceAccountToken is not false`);
    for (const f of ["hostNetwork", "hostPID", "hostIPC"]) if (pod[f]) err(`${where}: ${f} is set`);
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const t of w.spec.volumeClaimTemplates || []) volumes.set(t.metadata.name, { persistentVolumeClaim: { claimName: "(template)" } });
    for (const v of pod.volumes || []) {
      const type = Object.keys(v).find((k) => k !== "name");
      if (!RESTRICTED_VOLUME_TYPES.includes(type)) err(`${where}: volume ${v.name} of type ${type} is not allowed by the restricted profile`);
      if (v.secret && !secrets.some((s) => s.metadata.name === v.secret.secretName))
        err(`${where}: volume ${v.name}: no Secret ${v.secret.secretName}`);
      if (v.configMap && !configMaps.some((c) => c.metadata.name === v.configMap.name))
        err(`${where}: volume ${v.name}: no ConfigMap ${v.configMap.name}`);
      if (v.persistentVolumeClaim && !pvcs.some((c) => c.metadata.name === v.persistentVolumeClaim.claimName))
        err(`${where}: volume ${v.name}: no PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
    }
    const mounted = new Set();
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
      const cw = `${where} container ${c.name}`;
      const sc = c.securityContext || {};
      if (sc.allowPrivilegeEscalation !== false) err(`${cw}: allowPrivilegeEscalation is not false`);
      if (sc.readOnlyRootFilesystem !== true) err(`${cw}: readOnlyRootFilesystem is not true`);
      if (sc.privileged) err(`${cw}: privileged`);
      if (!(sc.capabilities?.drop || []).includes("ALL")) err(`${cw}: capabilities do not drop ALL`);
      if ((sc.capabilities?.add || []).length) err(`${cw}: adds capabilities`);
      for (const r of ["cpu", "memory"]) {
        const req = c.resources?.requests?.[r], lim = c.resources?.limits?.[r];
        if (req === undefined || lim === undefined) err(`${cw}: no ${r} request and limit`);
        else if (!(quantity(req) <= quantity(lim))) err(`${cw}: ${r} request ${req} above its limit ${lim}`);
      }
      for (const m of c.volumeMounts || []) {
        if (!volumes.has(m.name)) err(`${cw}: volumeMount ${m.name} has no volume`);
        mounted.add(m.name);
      }
      for (const e of c.envFrom || []) {
        if (e.secretRef && !secrets.some((s) => s.metadata.name === e.secretRef.name)) err(`${cw}: envFrom: no Secret ${e.secretRef.name}`);
        if (e.configMapRef && !configMaps.some((s) => s.metadata.name === e.configMapRef.name)) err(`${cw}: envFrom: no ConfigMap ${e.configMapRef.name}`);
      }
      for (const e of c.env || []) {
        const r = e.valueFrom?.secretKeyRef;
        if (r && !secrets.some((s) => s.metadata.name === r.name)) err(`${cw}: env ${e.name}: no Secret ${r.name}`);
      }
    }
    for (const name of volumes.keys()) if (!mounted.has(name)) err(`${where}: volume ${name} is not mounted`);
  }

  const mountFor = (w, path) => {
    const c = w.spec.template.spec.containers[0];
    let best = null;
    for (const m of c.volumeMounts || [])
      if ((path === m.mountPath || path.startsWith(m.mountPath + "/")) && (!best || m.mountPath.length > best.mountPath.length)) best = m;
    if (!best) return null;
    const vol = (w.spec.template.spec.volumes || []).find((v) => v.name === best.name) ||
      (w.spec.volumeClaimTemplates || []).find((t) => t.metadata.name === best.name);
    return { mount: best, volume: vol };
  };
  const writable = (w, path) => {
    const m = mountFor(w, path);
    return m && !m.mount.readOnly && m.volume && !m.volume.secret && !m.volume.configMap;
  };

  // The coordinator's container.
  const sc = server.spec.template.spec.containers.find((c) => c.name === "llmc-server");
  if (!sc) return [...errs, "StatefulSet llmc-server: no container llmc-server"];
  const sargs = sc.args || [];
  const cport = (name) => (sc.ports || []).find((p) => p.name === name)?.containerPort;
  const httpListen = argValues(sargs, "--http-listen")[0], grpcListen = argValues(sargs, "--listen")[0];
  if (!httpListen || !grpcListen) err("llmc-server: --listen and --http-listen must be given (their defaults listen on 127.0.0.1 only)");
  else {
    if (hostOf(grpcListen) === "127.0.0.1" || hostOf(httpListen) === "127.0.0.1") err("llmc-server: listens on loopback only");
    if (portOf(grpcListen) !== cport("grpc")) err(`llmc-server: --listen ${grpcListen} is not containerPort grpc (${cport("grpc")})`);
    if (portOf(httpListen) !== cport("http")) err(`llmc-server: --http-listen ${httpListen} is not containerPort http (${cport("http")})`);
  }
  for (const p of ["livenessProbe", "readinessProbe"]) {
    const g = sc[p]?.httpGet;
    if (!g || g.path !== "/healthz") { err(`llmc-server: ${p} is not an HTTP GET of /healthz`); continue; }
    const n = typeof g.port === "number" ? g.port : cport(g.port);
    if (!httpListen || n !== portOf(httpListen)) err(`llmc-server: ${p} port ${g.port} is not the --http-listen port`);
  }
  const dataMount = mountFor(server, "/var/lib/llmc");
  if (!dataMount || !(server.spec.volumeClaimTemplates || []).some((t) => t.metadata.name === dataMount.mount.name &&
      (t.spec.accessModes || []).includes("ReadWriteOnce")))
    err("llmc-server: /var/lib/llmc (the job store) is not on the StatefulSet's ReadWriteOnce volume claim");
  const dataDirArg = argValues(sargs, "--data-dir")[0];
  if (dataDirArg && dataDirArg !== "/var/lib/llmc") err(`llmc-server: --data-dir ${dataDirArg}: the image's entry point sets /var/lib/llmc`);
  if (!writable(server, "/tmp")) err("llmc-server: /tmp is not writable (read-only root file system)");
  const tok = mountFor(server, SERVER_TOKENS_DIR + "/worker.token");
  if (!tok?.volume?.secret) err(`llmc-server: no secret mounted at ${SERVER_TOKENS_DIR} (the entry point seeds tokens from there)`);
  const headless = services.find((s) => s.metadata.name === server.spec.serviceName);
  if (!headless || headless.spec.clusterIP !== "None") err(`StatefulSet llmc-server: serviceName ${server.spec.serviceName} is not a headless Service`);

  // Services reaching the coordinator.
  const podLabels = server.spec.template.metadata.labels;
  const api = services.find((s) => s.metadata.name === "llmc-server");
  if (!api) err("no Service llmc-server");
  for (const s of services) {
    if (!matches({ matchLabels: s.spec.selector }, podLabels)) continue;
    for (const p of s.spec.ports) {
      const target = typeof p.targetPort === "string" ? cport(p.targetPort) : p.targetPort ?? p.port;
      if (target === undefined) err(`Service ${s.metadata.name} port ${p.name}: targetPort ${p.targetPort} is no container port`);
    }
  }

  // The worker's container.
  const wc = worker.spec.template.spec.containers.find((c) => c.name === "llmc-worker");
  if (!wc) return [...errs, "Deployment llmc-worker: no container llmc-worker"];
  const wargs = wc.args || [];
  const coord = argValues(wargs, "--coordinator")[0];
  if (!coord) err("llmc-worker: no --coordinator");
  else {
    const svc = services.find((s) => [s.metadata.name, `${s.metadata.name}.${NAMESPACE}`,
      `${s.metadata.name}.${NAMESPACE}.svc`, `${s.metadata.name}.${NAMESPACE}.svc.cluster.local`].includes(hostOf(coord)));
    const sp = svc?.spec.ports.find((p) => p.port === portOf(coord));
    if (!svc || !matches({ matchLabels: svc.spec.selector }, podLabels)) err(`llmc-worker: --coordinator ${coord} is no Service of the coordinator`);
    else if (!sp) err(`llmc-worker: --coordinator ${coord}: the Service has no port ${portOf(coord)}`);
    else {
      const target = typeof sp.targetPort === "string" ? cport(sp.targetPort) : sp.targetPort ?? sp.port;
      if (!grpcListen || target !== portOf(grpcListen)) err(`llmc-worker: --coordinator ${coord} does not reach the coordinator's gRPC port`);
    }
  }
  const tokenFile = argValues(wargs, "--token-file")[0];
  const tm = tokenFile && mountFor(worker, tokenFile);
  if (!tm?.volume?.secret) err(`llmc-worker: --token-file ${tokenFile} is not in a mounted Secret`);
  else {
    const rel = tokenFile.slice(tm.mount.mountPath.length + 1);
    const items = tm.volume.secret.items;
    const key = items ? items.find((i) => i.path === rel)?.key : rel;
    const secret = secrets.find((s) => s.metadata.name === tm.volume.secret.secretName);
    if (!key || !secret || !(key in (secret.data || {}) || key in (secret.stringData || {})))
      err(`llmc-worker: --token-file ${tokenFile}: the Secret has no such key`);
    const stok = mountFor(server, SERVER_TOKENS_DIR + "/worker.token");
    if (stok?.volume?.secret?.secretName !== tm.volume.secret.secretName)
      err("llmc-worker and llmc-server mount different token Secrets");
  }
  const workDir = argValues(wargs, "--work-dir")[0];
  if (workDir && !writable(worker, workDir)) err(`llmc-worker: --work-dir ${workDir} is not a writable mount`);
  const cache = (wc.env || []).find((e) => e.name === "XDG_CACHE_HOME")?.value || "/var/cache/llmc";
  if (!writable(worker, cache)) err(`llmc-worker: the cache ${cache} (XDG_CACHE_HOME) is not a writable mount`);
  if (!writable(worker, "/tmp")) err("llmc-worker: /tmp is not writable");
  for (const e of wc.env || []) {
    const ref = e.valueFrom?.resourceFieldRef;
    if (ref && ref.resource.startsWith("limits.") && wc.resources?.limits?.[ref.resource.slice(7)] === undefined)
      err(`llmc-worker: env ${e.name} refers to ${ref.resource}, which is not set`);
  }

  // GPU or not.
  const gpus = quantity(wc.resources?.limits?.["nvidia.com/gpu"] ?? 0);
  const device = argValues(wargs, "--device")[0] || "cpu";
  if (expect.gpu) {
    if (!(gpus >= 1)) err("gpu overlay: llmc-worker has no nvidia.com/gpu limit");
    if (device !== "cuda") err("gpu overlay: llmc-worker is not started with --device cuda");
  } else {
    if (gpus) err("cpu overlay: llmc-worker asks for GPUs");
    if (device !== "cpu") err(`cpu overlay: llmc-worker --device ${device}`);
  }

  // Storage: a shared file system at the same path everywhere, or object storage.
  const rw = argValues(sargs, "--allowed-root"), ro = argValues(sargs, "--allowed-input-root");
  if (expect.storage === "shared") {
    const local = rw.filter((r) => r.startsWith("/"));
    if (!local.length) err("shared storage: the coordinator has no local --allowed-root");
    for (const r of local) {
      const a = mountFor(server, r), b = mountFor(worker, r);
      const ca = a?.volume?.persistentVolumeClaim?.claimName, cb = b?.volume?.persistentVolumeClaim?.claimName;
      if (!ca || ca !== cb || a.mount.mountPath !== b.mount.mountPath)
        err(`shared storage: --allowed-root ${r} is not the same claim at the same path in the coordinator and the workers`);
      const claim = pvcs.find((p) => p.metadata.name === ca);
      if (claim && !(claim.spec.accessModes || []).includes("ReadWriteMany")) err(`shared storage: claim ${ca} is not ReadWriteMany`);
      if (!writable(worker, r)) err(`shared storage: ${r} is not writable in the workers`);
    }
  } else {
    if (!rw.some((r) => r.startsWith("s3://"))) err("s3: the coordinator has no s3:// --allowed-root");
    if (!ro.concat(rw).some((r) => r.startsWith("s3://"))) err("s3: no s3:// input root");
    const env = new Set();
    for (const e of wc.envFrom || []) {
      const src = e.secretRef ? secrets.find((s) => s.metadata.name === e.secretRef.name)
        : configMaps.find((c) => c.metadata.name === e.configMapRef?.name);
      for (const k of Object.keys(src?.data || {})) env.add(k);
    }
    for (const e of wc.env || []) env.add(e.name);
    for (const k of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
      if (!env.has(k)) err(`s3: llmc-worker gets no ${k}`);
    const sEnv = (sc.envFrom || []).map((e) => e.secretRef?.name).filter(Boolean);
    if (sEnv.some((n) => n.startsWith("llmc-s3"))) err("s3: the coordinator needs no S3 credentials; do not give them to it");
  }

  // NetworkPolicies select pods that exist, and let workers reach the coordinator.
  const templates = [server, worker].map((w) => w.spec.template.metadata.labels);
  for (const np of all("NetworkPolicy"))
    if (!templates.some((l) => matches(np.spec.podSelector, l))) err(`NetworkPolicy ${np.metadata.name} selects no pod`);
  const wPolicies = all("NetworkPolicy").filter((np) => matches(np.spec.podSelector, worker.spec.template.metadata.labels) &&
    (np.spec.policyTypes || []).includes("Egress"));
  if (wPolicies.length) {
    const reach = wPolicies.some((np) => (np.spec.egress || []).some((r) =>
      (!r.to || r.to.some((t) => t.podSelector && matches(t.podSelector, podLabels))) &&
      (!r.ports || r.ports.some((p) => p.port === portOf(grpcListen || ":0") || p.port === "grpc"))));
    if (!reach) err("NetworkPolicy: workers may not reach the coordinator's gRPC port");
  }
  const sPolicies = all("NetworkPolicy").filter((np) => matches(np.spec.podSelector, podLabels) &&
    (np.spec.policyTypes || []).includes("Ingress"));
  if (sPolicies.length && grpcListen) {
    const wl = worker.spec.template.metadata.labels;
    const open = sPolicies.some((np) => (np.spec.ingress || []).some((r) =>
      (!r.from || r.from.some((f) => (f.podSelector && !f.namespaceSelector && matches(f.podSelector, wl)))) &&
      (!r.ports || r.ports.some((p) => p.port === portOf(grpcListen)))));
    if (!open) err("NetworkPolicy: the coordinator does not admit workers on its gRPC port");
  }

  // ServiceMonitor: one Service, a named port that serves /metrics.
  for (const sm of all("ServiceMonitor")) {
    const sel = services.filter((s) => matches(sm.spec.selector, s.metadata.labels));
    if (sel.length !== 1) err(`ServiceMonitor ${sm.metadata.name} selects ${sel.length} Services; it must select exactly one`);
    for (const ep of sm.spec.endpoints || []) {
      if (ep.path !== "/metrics") err(`ServiceMonitor ${sm.metadata.name}: path ${ep.path}`);
      const p = sel[0]?.spec.ports.find((x) => x.name === ep.port);
      if (!p) err(`ServiceMonitor ${sm.metadata.name}: the Service has no port named ${ep.port}`);
      else if (httpListen && (typeof p.targetPort === "string" ? cport(p.targetPort) : p.targetPort) !== portOf(httpListen))
        err(`ServiceMonitor ${sm.metadata.name}: port ${ep.port} is not the coordinator's HTTP port`);
    }
  }
  if (!all("ServiceMonitor").length) err("no ServiceMonitor");
  if (!byPrefix("Secret", "llmc-tokens")) err("no Secret llmc-tokens");
  return errs;
}

// ---------------------------------------------------------------------------------------------------------------
// Flags in args must exist in the binaries.
function flagErrors(objs, binDir) {
  const errs = [];
  const help = {};
  for (const b of ["llmc-server", "llmc-worker"]) help[b] = execFileSync(join(binDir, b), ["--help"], { encoding: "utf8" });
  for (const o of objs) {
    for (const c of o.spec?.template?.spec?.containers || []) {
      const h = help[c.name];
      if (!h) continue;
      for (const a of c.args || []) {
        if (!a.startsWith("--")) continue;
        const flag = a.split("=")[0];
        if (!new RegExp(`(^|[\\s,])${flag.replace(/[-]/g, "\\-")}([\\s,=]|$)`, "m").test(h))
          errs.push(`${o.kind} ${o.metadata.name}: ${c.name} has no flag ${flag} (${c.name} --help)`);
      }
    }
  }
  return errs;
}

// ---------------------------------------------------------------------------------------------------------------
// TypeScript: each object as a literal of its interface; plus objects that must be rejected.
function tsModuleFor(o, i) {
  const iface = `I${o.kind}`;
  return { imp: `import type { ${iface} as T${i} } from "${modelModule(o.apiVersion, o.kind)}";`, iface: `T${i}` };
}

function typeCheck(rendered, workDir) {
  const imports = [];
  const decls = []; // [what, text]
  let i = 0;
  for (const [name, objs] of rendered) {
    for (const o of objs) {
      const t = tsModuleFor(o, i);
      imports.push(t.imp);
      decls.push([`overlay ${name}: ${o.kind} ${o.metadata?.name}`, `export const o${i}: ${t.iface} = ${JSON.stringify(o, null, 1)};`]);
      i++;
    }
  }
  // Must-fail cases (tsc reports an unused @ts-expect-error if it lets them through): a misspelt field, and a
  // value outside a string enum.
  imports.push(`import type { IStatefulSet as Bad0 } from "kubernetes-models/apps/v1/StatefulSet";`);
  imports.push(`import type { IServiceMonitor as Bad1 } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";`);
  decls.push(["must-fail case 0", `// @ts-expect-error: unknown field imagePullPolicyy\nexport const bad0: Bad0 = { apiVersion: "apps/v1", kind: "StatefulSet", spec: { selector: {}, serviceName: "x", template: { spec: { containers: [{ name: "x", imagePullPolicyy: "Always" }] } } } };`]);
  decls.push(["must-fail case 1", `// @ts-expect-error: endpoints[0].scheme is "http" | "https"\nexport const bad1: Bad1 = { apiVersion: "monitoring.coreos.com/v1", kind: "ServiceMonitor", metadata: { name: "x" }, spec: { selector: {}, endpoints: [{ port: "http", scheme: "htp" }] } };`]);
  let text = imports.join("\n") + "\n";
  let line = imports.length + 1;
  const starts = []; // [first line, what]
  for (const [what, d] of decls) {
    text += "\n" + d + "\n";
    starts.push([line + 1, what]);
    line += 1 + d.split("\n").length;
  }
  writeFileSync(join(workDir, "manifests.ts"), text);
  writeFileSync(join(workDir, "tsconfig.json"), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, skipLibCheck: true, module: "nodenext", moduleResolution: "nodenext",
      target: "es2022", types: [] },
    files: ["manifests.ts"],
  }));
  try {
    execFileSync(process.execPath, [join(HERE, "node_modules", "typescript", "bin", "tsc"), "-p", join(workDir, "tsconfig.json")],
      { encoding: "utf8", stdio: "pipe" });
    return [];
  } catch (e) {
    const out = (e.stdout || String(e)).trim().split("\n");
    return out.slice(0, 30).map((l) => {
      const m = /manifests\.ts\((\d+),\d+\): (.*)$/.exec(l);
      if (!m) return l;
      const n = Number(m[1]);
      let what = "?";
      for (const [s, w] of starts) if (s <= n) what = w;
      return `${what}: ${m[2]}`;
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
async function main() {
  const argv = process.argv.slice(2);
  if (!argv.length) { console.error("usage: node k8s_validate.mjs K8S_DIR [--bin BUILD_DIR/bin]"); process.exit(2); }
  const k8s = resolve(argv[0]);
  const bi = argv.indexOf("--bin");
  const binDir = bi >= 0 ? resolve(argv[bi + 1]) : null;
  if (binDir && !existsSync(join(binDir, "llmc-server"))) { console.error(`no llmc-server in ${binDir}`); process.exit(2); }

  let passed = 0, failed = 0;
  const report = (name, errs) => {
    if (errs.length) { failed++; console.log(`FAIL ${name}`); for (const e of errs) console.log(`  ${e}`); }
    else { passed++; console.log(`ok   ${name}`); }
  };

  const overlays = readdirSync(join(k8s, "overlays")).sort();
  const rendered = new Map();
  for (const name of overlays) {
    const expect = OVERLAYS[name];
    if (!expect) { report(`overlay ${name}`, ["not listed in k8s_validate.mjs OVERLAYS: say what it must contain"]); continue; }
    let objs, parseErrs;
    try {
      ({ objs, errors: parseErrs } = render(join(k8s, "overlays", name)));
    } catch (e) {
      report(`overlay ${name}: kubectl kustomize`, [(e.stderr || String(e)).trim()]);
      continue;
    }
    rendered.set(name, objs);
    const errs = [...parseErrs];
    for (const o of objs) for (const e of await schemaErrors(o)) errs.push(`${o.kind} ${o.metadata?.name}: ${e}`);
    errs.push(...llmcErrors(objs, expect));
    if (binDir) errs.push(...flagErrors(objs, binDir));
    report(`overlay ${name}: kustomize, schemas, llmc rules${binDir ? ", flags" : ""} (${objs.length} objects)`, errs);
  }
  for (const name of Object.keys(OVERLAYS))
    if (!overlays.includes(name)) report(`overlay ${name}`, ["listed in OVERLAYS but missing from deploy/k8s/overlays"]);

  // The example of a deployment of one's own (docs/operations.md): with a worker token next to it, the real
  // token replaces the placeholder in the one Secret both pods mount, and the images come from the registry.
  const ex = join(k8s, "example");
  if (existsSync(join(ex, "kustomization.yaml"))) {
    const tokPath = join(ex, "worker.token");
    const had = existsSync(tokPath);
    if (!had) writeFileSync(tokPath, `llmc_${randomBytes(32).toString("hex")}\n`);
    const errs = [];
    let objs = [];
    try {
      const token = readFileSync(tokPath, "utf8");
      let parseErrs;
      ({ objs, errors: parseErrs } = render(ex));
      errs.push(...parseErrs);
      const kust = parseAllDocuments(readFileSync(join(ex, "kustomization.yaml"), "utf8"))[0].toJS();
      const base = (kust.resources || []).map((r) => r.split("/").pop()).find((n) => OVERLAYS[n]);
      if (!base) errs.push("its resources name none of the overlays");
      else errs.push(...llmcErrors(objs, OVERLAYS[base]));
      for (const o of objs) for (const e of await schemaErrors(o)) errs.push(`${o.kind} ${o.metadata?.name}: ${e}`);
      const tokenSecrets = objs.filter((o) => o.kind === "Secret" && o.metadata.name.startsWith("llmc-tokens"));
      if (tokenSecrets.length !== 1) errs.push(`${tokenSecrets.length} llmc-tokens Secrets`);
      else if (Buffer.from(tokenSecrets[0].data?.["worker.token"] || "", "base64").toString() !== token)
        errs.push("the llmc-tokens Secret does not hold worker.token");
      for (const o of objs.filter((o) => o.kind === "Secret"))
        for (const [k, v] of Object.entries(o.data || {}))
          if (Buffer.from(v, "base64").toString().includes("REPLACE_ME") && o.metadata.name.startsWith("llmc-tokens"))
            errs.push(`${o.metadata.name}: ${k} is still the placeholder`);
      for (const o of objs)
        for (const c of o.spec?.template?.spec?.containers || [])
          if (c.image.startsWith("localhost/")) errs.push(`${o.kind} ${o.metadata.name}: image ${c.image} was not replaced`);
      if (binDir) errs.push(...flagErrors(objs, binDir));
    } catch (e) {
      errs.push((e.stderr || String(e)).trim());
    } finally {
      if (!had) rmSync(tokPath, { force: true });
    }
    rendered.set("example", objs);
    report(`example (own overlay): the token replaced, images from a registry, llmc rules (${objs.length} objects)`, errs);
  }

  const work = mkdtempSync(join(HERE, ".tsc-")); // inside deploy/tests: tsc finds node_modules from here
  try {
    report(`TypeScript types of ${[...rendered.values()].reduce((n, o) => n + o.length, 0)} objects (tsc, strict)`, typeCheck(rendered, work));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }

  // The checks must reject broken manifests.
  const base = rendered.get("cpu");
  if (base) {
    const mutations = [
      ["two coordinator replicas", (o) => { if (o.kind === "StatefulSet") o.spec.replicas = 2; }],
      ["a writable root file system", (o) => { if (o.kind === "Deployment") delete o.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem; }],
      ["a worker dialling a Service that does not exist", (o) => { if (o.kind === "Deployment") { const a = o.spec.template.spec.containers[0].args; a[a.indexOf("--coordinator") + 1] = "llmc-coordinator:7443"; } }],
      ["a liveness probe on another port", (o) => { if (o.kind === "StatefulSet") o.spec.template.spec.containers[0].livenessProbe.httpGet.port = 7443; }],
      ["a ServiceMonitor selecting both Services", (o) => { if (o.kind === "ServiceMonitor") delete o.spec.selector.matchExpressions; }],
      ["a volume without its claim", (o) => { if (o.kind === "PersistentVolumeClaim") o.metadata.name = "other"; }],
      ["a hostPath volume", (o) => { if (o.kind === "Deployment") o.spec.template.spec.volumes[2] = { name: "tmp", hostPath: { path: "/tmp" } }; }],
    ];
    const missed = [];
    for (const [what, f] of mutations) {
      const objs = structuredClone(base);
      objs.forEach(f);
      if (!llmcErrors(objs, OVERLAYS.cpu).length) missed.push(`llmc rules accepted ${what}`);
    }
    const bad = structuredClone(base).find((o) => o.kind === "StatefulSet");
    bad.spec.template.spec.containers[0].ports[0].containerPort = "grpc";
    if (!(await schemaErrors(bad)).length) missed.push("the schema accepted a string containerPort");
    if (binDir) {
      const objs = structuredClone(base);
      objs.find((o) => o.kind === "Deployment").spec.template.spec.containers[0].args.push("--no-such-flag");
      if (!flagErrors(objs, binDir).length) missed.push("the flag check accepted --no-such-flag");
    }
    report(`the checks reject ${mutations.length + 1 + (binDir ? 1 : 0)} broken copies of overlay cpu`, missed);
  }

  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
