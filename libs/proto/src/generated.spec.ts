import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { SimulateRequest, SimulationMethod, SimulatorServiceService } from './index';

const root = path.resolve(__dirname, '../../..');

describe('generated wire code', () => {
  it('is fresh: regenerating from proto/ reproduces the committed files byte for byte', () => {
    const output = execFileSync('node', [path.join(root, 'tools/scripts/generate-proto.mjs'), '--check'], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(output).toContain('up to date');
  });

  it('round-trips a request and keeps unset optional fields unset', () => {
    const request = SimulateRequest.fromPartial({ config: { a: 0.5, method: SimulationMethod.SIMULATION_METHOD_EXACT } });
    const decoded = SimulateRequest.decode(SimulateRequest.encode(request).finish());
    expect(decoded.config?.a).toBe(0.5);
    expect(decoded.config?.k).toBeUndefined();
    expect(decoded.config?.method).toBe(SimulationMethod.SIMULATION_METHOD_EXACT);
    expect(SimulatorServiceService.simulate.path).toBe('/dsi.v1.SimulatorService/Simulate');
  });
});
