/**
 * ESLint rule `dsi/declared-dependencies`: every package a file imports is declared in the
 * package.json nearest to that file, so nothing works only because npm hoisted it to the root.
 * Source files need `dependencies` (or `peerDependencies`); tests and type-only imports may also use
 * `devDependencies`. Node built-ins and relative imports are always fine.
 */
import { builtinModules } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const builtins = new Set(builtinModules);
const manifests = new Map();

/** The nearest package.json above `file`, parsed once per lint run. */
function manifestFor(file) {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    if (manifests.has(dir)) return manifests.get(dir);
    const candidate = path.join(dir, 'package.json');
    if (existsSync(candidate)) {
      const json = JSON.parse(readFileSync(candidate, 'utf8'));
      const manifest = {
        file: candidate,
        name: json.name,
        runtime: new Set([...Object.keys(json.dependencies ?? {}), ...Object.keys(json.peerDependencies ?? {})]),
        dev: new Set(Object.keys(json.devDependencies ?? {})),
      };
      manifests.set(dir, manifest);
      return manifest;
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** `@scope/name/sub` -> `@scope/name`; `name/sub` -> `name`; undefined for relative and built-in specifiers. */
export function packageOf(specifier) {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:')) return undefined;
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
  return builtins.has(name) ? undefined : name;
}

const rule = {
  meta: {
    type: 'problem',
    docs: { description: 'imported packages are declared in the nearest package.json' },
    schema: [],
    messages: {
      undeclared: '"{{name}}" is imported but not declared in {{manifest}} ({{where}})',
    },
  },
  create(context) {
    const file = context.filename;
    const manifest = manifestFor(file);
    if (!manifest) return {};
    const isTest = /\.spec\.[cm]?[jt]s$/.test(file) || file.includes(`${path.sep}test${path.sep}`);
    const check = (node, specifier, typeOnly) => {
      if (typeof specifier !== 'string') return;
      const name = packageOf(specifier);
      if (!name || name === manifest.name || manifest.runtime.has(name)) return;
      if ((isTest || typeOnly) && manifest.dev.has(name)) return;
      const where = isTest || typeOnly ? 'dependencies or devDependencies' : 'dependencies';
      context.report({ node, messageId: 'undeclared', data: { name, manifest: path.relative(process.cwd(), manifest.file) || 'package.json', where } });
    };
    return {
      ImportDeclaration: (node) => check(node, node.source.value, node.importKind === 'type'),
      ExportNamedDeclaration: (node) => node.source && check(node, node.source.value, node.exportKind === 'type'),
      ExportAllDeclaration: (node) => check(node, node.source.value, node.exportKind === 'type'),
      ImportExpression: (node) => node.source.type === 'Literal' && check(node, node.source.value, false),
      CallExpression: (node) => {
        const [first] = node.arguments;
        if (node.callee.type === 'Identifier' && node.callee.name === 'require' && first?.type === 'Literal') check(node, first.value, false);
      },
    };
  },
};

/** The `dsi` ESLint plugin. */
export default { rules: { 'declared-dependencies': rule } };
