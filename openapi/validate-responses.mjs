#!/usr/bin/env node
// Checks recorded HTTP exchanges against openapi.yaml, so the spec users read
// and the server they call cannot drift apart unnoticed.
//
// Usage: node validate-responses.mjs [--spec openapi.yaml] exchanges.jsonl [more.jsonl ...]
//
// Each non-blank line of an input file is one exchange:
//   {"method": "GET", "path": "/v1/sandboxes/sb-123", "status": 200,
//    "content_type": "application/json", "body": <parsed JSON body or null>,
//    "headers": {"x-request-id": "..."}}          <- "headers" is optional
// For a streamed exec (application/x-ndjson) record one exchange per line of
// the stream, with "body" = that parsed line: it is validated against the
// schema of one line.
//
// An exchange matches when its path matches a path template of the spec, the
// method is declared there, the status is declared (exactly, as "2XX", or as
// "default"), the content type is declared for that response (or the response
// has no content and none was sent), the body validates against the declared
// schema (JSON types only; other types are checked for the content type
// alone) and, when "headers" are given, every required response header is
// present and valid.
//
// Prints every mismatch and exits 1 if there is any (or if the input holds no
// exchange at all: an empty recording is a broken recorder, not a pass),
// 0 when everything matches, 2 on a usage error or an unreadable spec.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import process from 'node:process';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);

// All component schemas live in one ajv document under this id; every
// "#/components/schemas/X" ref of the spec is rewritten to point into it.
const SCHEMAS_ID = 'urn:forkvm:openapi-schemas';

export const DEFAULT_SPEC_PATH = path.join(path.dirname(fileURLToPath(import.meta.url)), 'openapi.yaml');

export function loadSpec(specPath = DEFAULT_SPEC_PATH) {
    return YAML.parse(readFileSync(specPath, 'utf8'));
}

// Resolves a local JSON pointer ref ("#/components/responses/NotFound").
function resolveLocalRef(spec, ref) {
    if (!ref.startsWith('#/')) throw new Error(`only local refs are supported, got ${ref}`);
    let node = spec;
    for (const raw of ref.slice(2).split('/')) {
        const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
        if (node === null || typeof node !== 'object' || !(key in node)) {
            throw new Error(`unresolvable ref ${ref}`);
        }
        node = node[key];
    }
    return node;
}

// Follows $ref chains of non-schema objects (responses, headers, media types).
function deref(spec, node) {
    const seen = new Set();
    while (node && typeof node === 'object' && typeof node.$ref === 'string') {
        if (seen.has(node.$ref)) throw new Error(`ref cycle at ${node.$ref}`);
        seen.add(node.$ref);
        node = resolveLocalRef(spec, node.$ref);
    }
    return node;
}

// Deep copy with component schema refs made absolute, so a schema compiled on
// its own still finds the components.
function absolutizeRefs(node) {
    if (Array.isArray(node)) return node.map(absolutizeRefs);
    if (node === null || typeof node !== 'object') return node;
    const out = {};
    for (const [key, value] of Object.entries(node)) {
        if (key === '$ref' && typeof value === 'string' && value.startsWith('#/components/schemas/')) {
            out[key] = `${SCHEMAS_ID}#/$defs/${value.slice('#/components/schemas/'.length)}`;
        } else {
            out[key] = absolutizeRefs(value);
        }
    }
    return out;
}

// "text/plain; version=0.0.4" -> "text/plain".
function baseMediaType(contentType) {
    return String(contentType).split(';')[0].trim().toLowerCase();
}

function isJsonMediaType(mediaType) {
    return (
        mediaType === 'application/json' ||
        mediaType.endsWith('+json') ||
        // One parsed line of the stream is a JSON value; see the file comment.
        mediaType === 'application/x-ndjson'
    );
}

// The declared media type a response content type falls under: exact first,
// then "type/*", then "*/*".
function findMediaType(content, contentType) {
    const wanted = baseMediaType(contentType);
    const declared = new Map(Object.keys(content).map((key) => [baseMediaType(key), key]));
    const candidates = [wanted, `${wanted.split('/')[0]}/*`, '*/*'];
    for (const candidate of candidates) {
        if (declared.has(candidate)) return declared.get(candidate);
    }
    return null;
}

function compilePathTemplates(paths) {
    const templates = Object.keys(paths).map((template) => {
        const pattern = template
            .split(/(\{[^}/]+\})/)
            .map((part) => (/^\{[^}/]+\}$/.test(part) ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
            .join('');
        const params = (template.match(/\{[^}/]+\}/g) ?? []).length;
        return { template, regex: new RegExp(`^${pattern}$`), params };
    });
    // OpenAPI: a concrete path wins over a templated one that also matches.
    templates.sort((a, b) => a.params - b.params);
    return templates;
}

function formatAjvErrors(errors) {
    return (errors ?? []).map((e) => {
        const where = e.instancePath === '' ? '(body)' : e.instancePath;
        let detail = '';
        if (e.keyword === 'additionalProperties') detail = `: "${e.params.additionalProperty}"`;
        else if (e.keyword === 'enum') detail = `: ${JSON.stringify(e.params.allowedValues)}`;
        else if (e.keyword === 'const') detail = `: ${JSON.stringify(e.params.allowedValue)}`;
        return `${where} ${e.message}${detail} [${e.schemaPath}]`;
    });
}

export function createValidator(spec) {
    if (!spec || typeof spec !== 'object' || !spec.paths) throw new Error('not an OpenAPI document (no paths)');

    const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
    addFormats(ajv);
    // OpenAPI's own schema keywords: annotations only, nothing to check.
    ajv.addVocabulary(['discriminator', 'example', 'xml', 'externalDocs']);
    ajv.addSchema({ $id: SCHEMAS_ID, $defs: absolutizeRefs(spec.components?.schemas ?? {}) });

    const templates = compilePathTemplates(spec.paths);
    const compiled = new Map();

    function validatorFor(key, schema) {
        if (!compiled.has(key)) compiled.set(key, ajv.compile(absolutizeRefs(schema)));
        return compiled.get(key);
    }

    function checkHeaders(response, exchange, where, problems) {
        if (exchange.headers === undefined) return;
        if (exchange.headers === null || typeof exchange.headers !== 'object' || Array.isArray(exchange.headers)) {
            problems.push('"headers" must be an object');
            return;
        }
        const received = new Map(Object.entries(exchange.headers).map(([k, v]) => [k.toLowerCase(), v]));
        for (const [name, rawHeader] of Object.entries(response.headers ?? {})) {
            const header = deref(spec, rawHeader);
            const value = received.get(name.toLowerCase());
            if (value === undefined || value === null) {
                if (header.required) problems.push(`required response header ${name} is missing`);
                continue;
            }
            if (!header.schema) continue;
            // Header values arrive as text; numbers are compared as numbers.
            let typed = value;
            const type = header.schema.type;
            if ((type === 'integer' || type === 'number') && typeof value === 'string' && value.trim() !== '') {
                typed = Number(value);
            }
            const validate = validatorFor(`${where}/headers/${name}`, header.schema);
            if (!validate(typed)) {
                problems.push(...formatAjvErrors(validate.errors).map((m) => `header ${name}: ${m}`));
            }
        }
    }

    // Returns the list of problems of one exchange ([] = it matches).
    function validateExchange(exchange) {
        const problems = [];
        if (exchange === null || typeof exchange !== 'object' || Array.isArray(exchange)) {
            return ['an exchange must be a JSON object'];
        }
        const { method, status } = exchange;
        if (typeof method !== 'string' || method === '') problems.push('"method" must be a non-empty string');
        if (typeof exchange.path !== 'string' || !exchange.path.startsWith('/')) {
            problems.push('"path" must be a string starting with "/"');
        }
        if (!Number.isInteger(status) || status < 100 || status > 599) {
            problems.push('"status" must be an integer 100..599');
        }
        if (exchange.content_type !== undefined && exchange.content_type !== null && typeof exchange.content_type !== 'string') {
            problems.push('"content_type" must be a string or null');
        }
        if (problems.length > 0) return problems;

        const requestPath = exchange.path.split('?')[0].split('#')[0];
        const match = templates.find((t) => t.regex.test(requestPath));
        if (!match) return [`path ${requestPath} matches no path of the spec`];
        const pathItem = deref(spec, spec.paths[match.template]);

        const lowerMethod = method.toLowerCase();
        const operation = HTTP_METHODS.has(lowerMethod) ? pathItem[lowerMethod] : undefined;
        if (!operation) {
            const declared = Object.keys(pathItem).filter((k) => HTTP_METHODS.has(k)).map((k) => k.toUpperCase());
            return [`method ${method.toUpperCase()} is not declared for ${match.template} (declared: ${declared.join(', ')})`];
        }

        const responses = operation.responses ?? {};
        const statusKey = [String(status), `${String(status)[0]}XX`, `${String(status)[0]}xx`, 'default'].find(
            (key) => key in responses,
        );
        if (statusKey === undefined) {
            return [
                `status ${status} is not declared for ${method.toUpperCase()} ${match.template} (declared: ${Object.keys(responses).join(', ')})`,
            ];
        }
        const response = deref(spec, responses[statusKey]);
        const where = `${lowerMethod} ${match.template} ${statusKey}`;

        checkHeaders(response, exchange, where, problems);

        const contentType = exchange.content_type ?? '';
        const content = response.content ?? {};
        if (Object.keys(content).length === 0) {
            if (contentType !== '') problems.push(`response ${statusKey} declares no content, got content type ${contentType}`);
            if (exchange.body !== undefined && exchange.body !== null) {
                problems.push(`response ${statusKey} declares no content, got a body`);
            }
            return problems;
        }
        if (contentType === '') {
            problems.push(`no content type, expected one of: ${Object.keys(content).join(', ')}`);
            return problems;
        }
        const mediaKey = findMediaType(content, contentType);
        if (mediaKey === null) {
            problems.push(`content type ${contentType} is not declared (declared: ${Object.keys(content).join(', ')})`);
            return problems;
        }
        const media = deref(spec, content[mediaKey]);
        if (!isJsonMediaType(baseMediaType(contentType)) || !media.schema) return problems;

        const body = exchange.body === undefined ? null : exchange.body;
        let schema = media.schema;
        let schemaKey = `${where} ${mediaKey}`;
        // A oneOf with a discriminator (the exec stream events): validate
        // against the one branch the discriminator names, so a bad event
        // reports its own problems instead of every branch's.
        const top = schema.$ref?.startsWith('#/components/schemas/') ? resolveLocalRef(spec, schema.$ref) : schema;
        const discriminator = top?.discriminator;
        if (discriminator?.propertyName && discriminator.mapping && body !== null && typeof body === 'object') {
            const value = body[discriminator.propertyName];
            const target = discriminator.mapping[value];
            if (typeof value !== 'string' || target === undefined) {
                problems.push(
                    `/${discriminator.propertyName} must be one of ${JSON.stringify(Object.keys(discriminator.mapping))}, got ${JSON.stringify(value)}`,
                );
                return problems;
            }
            schema = { $ref: target };
            schemaKey = target;
        }
        const validate = validatorFor(schemaKey, schema);
        if (!validate(body)) problems.push(...formatAjvErrors(validate.errors));
        return problems;
    }

    return { validateExchange };
}

// Validates JSONL text; returns {count, mismatches: [{line, method, path, status, problems}]}.
export function validateJsonl(text, validator, source = '<input>') {
    const mismatches = [];
    let count = 0;
    const lines = text.split('\n');
    lines.forEach((raw, index) => {
        const line = raw.trim();
        if (line === '') return;
        count += 1;
        let exchange;
        try {
            exchange = JSON.parse(line);
        } catch (error) {
            mismatches.push({ source, line: index + 1, problems: [`not valid JSON: ${error.message}`] });
            return;
        }
        const problems = validator.validateExchange(exchange);
        if (problems.length > 0) {
            mismatches.push({
                source,
                line: index + 1,
                method: exchange?.method,
                path: exchange?.path,
                status: exchange?.status,
                problems,
            });
        }
    });
    return { count, mismatches };
}

export function formatMismatch(m) {
    const what = m.method === undefined ? '' : ` ${String(m.method).toUpperCase()} ${m.path} -> ${m.status}`;
    return [`${m.source}:${m.line}:${what}`, ...m.problems.map((p) => `    ${p}`)].join('\n');
}

function usage() {
    return 'usage: node validate-responses.mjs [--spec openapi.yaml] exchanges.jsonl [more.jsonl ...]';
}

export function main(argv, out = console) {
    let specPath = DEFAULT_SPEC_PATH;
    const files = [];
    for (let i = 0; i < argv.length; i += 1) {
        const arg = argv[i];
        if (arg === '--spec') {
            if (i + 1 >= argv.length) {
                out.error(usage());
                return 2;
            }
            specPath = argv[++i];
        } else if (arg.startsWith('--spec=')) {
            specPath = arg.slice('--spec='.length);
        } else if (arg === '-h' || arg === '--help') {
            out.log(usage());
            return 0;
        } else if (arg.startsWith('-')) {
            out.error(`unknown option ${arg}\n${usage()}`);
            return 2;
        } else {
            files.push(arg);
        }
    }
    if (files.length === 0) {
        out.error(usage());
        return 2;
    }

    let validator;
    try {
        validator = createValidator(loadSpec(specPath));
    } catch (error) {
        out.error(`cannot load spec ${specPath}: ${error.message}`);
        return 2;
    }

    let total = 0;
    const all = [];
    for (const file of files) {
        let text;
        try {
            text = readFileSync(file, 'utf8');
        } catch (error) {
            out.error(`cannot read ${file}: ${error.message}`);
            return 2;
        }
        const { count, mismatches } = validateJsonl(text, validator, file);
        total += count;
        all.push(...mismatches);
    }
    for (const m of all) out.error(formatMismatch(m));
    if (total === 0) {
        out.error('no exchanges found: nothing was validated');
        return 1;
    }
    out.log(`${total} exchange(s) checked against ${path.basename(specPath)}, ${all.length} mismatch(es)`);
    return all.length === 0 ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    process.exitCode = main(process.argv.slice(2));
}
