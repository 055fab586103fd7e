// Test helper: lets a plain `node` child process require this library's TypeScript sources, compiled
// by swc as jest does. Specs use it (`node -r ./src/testing/register-swc.js`) to run code outside
// jest's module registry: several real processes, or code that needs native dynamic import().
const swc = require('@swc/core');

const options = { module: { type: 'commonjs' }, jsc: { target: 'es2022', parser: { syntax: 'typescript' } } };

require.extensions['.ts'] = (module, filename) => {
  module._compile(swc.transformFileSync(filename, options).code, filename);
};
