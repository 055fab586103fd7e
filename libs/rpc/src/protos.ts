// Descriptors served by reflection and the health service definition shared by server and client.
// Internal to @dsi/rpc: not exported from the package index.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  type DescriptorProto,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from '@bufbuild/protobuf/wkt';
import { FILE_DESCRIPTOR_SET_BASE64 } from '@dsi/proto';
import { protoPath as healthProtoPath, service as healthService } from 'grpc-health-check';

/** Fully qualified name of the standard health service. */
export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';

/** Fully qualified names of the two server reflection versions every DSI server answers. */
export const REFLECTION_SERVICE_NAMES = [
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
] as const;

/**
 * `keepCase` matters: for .proto sources proto-loader builds the descriptors reflection serves from
 * its parsed root, and without it field names come out camelCased (`file_by_filename` becomes
 * `fileByFilename`), which breaks grpcurl and buf curl JSON.
 */
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true };

let reflected: protoLoader.PackageDefinition | undefined;

/**
 * Every DSI service plus health and both reflection versions, as one proto-loader package
 * definition for `ReflectionService`, which serves the `fileDescriptorProtos` of its entries.
 *
 * proto-loader re-derives those files through protobufjs, which merges files per package, drops
 * comments, and names map entry types `Foo` instead of `FooEntry` (Go-based clients such as buf
 * curl and grpcurl then reject the whole file). So our own protos are served as buf built them,
 * and the health file's map entry is renamed.
 */
export function reflectedPackageDefinition(): protoLoader.PackageDefinition {
  if (reflected === undefined) {
    const descriptorSet = Buffer.from(FILE_DESCRIPTOR_SET_BASE64, 'base64');
    const bufFiles = fromBinary(FileDescriptorSetSchema, descriptorSet).file.map((file) =>
      Buffer.from(toBinary(FileDescriptorProtoSchema, file)),
    );
    const reflectionProtoRoot = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
    reflected = {
      ...withFiles(protoLoader.loadFileDescriptorSetFromBuffer(descriptorSet, LOADER_OPTIONS), () => bufFiles),
      ...withFiles(protoLoader.loadSync(healthProtoPath, LOADER_OPTIONS), (files) => files.map(repairMapEntryNames)),
      ...protoLoader.loadSync(
        ['grpc/reflection/v1/reflection.proto', 'grpc/reflection/v1alpha/reflection.proto'],
        { ...LOADER_OPTIONS, includeDirs: [reflectionProtoRoot] },
      ),
    };
  }
  return reflected;
}

/** Whether a package definition entry is a service (messages and enums carry a `format`). */
export function isServiceEntry(entry: protoLoader.AnyDefinition | undefined): entry is protoLoader.ServiceDefinition {
  return entry !== undefined && !('format' in entry);
}

/** Replaces the files every message and enum entry of a package definition points at. */
function withFiles(
  definition: protoLoader.PackageDefinition,
  replace: (files: Buffer[]) => Buffer[],
): protoLoader.PackageDefinition {
  const cache = new Map<Buffer[], Buffer[]>();
  const replaced: protoLoader.PackageDefinition = {};
  for (const [name, entry] of Object.entries(definition)) {
    if (isServiceEntry(entry)) {
      replaced[name] = entry;
      continue;
    }
    let files = cache.get(entry.fileDescriptorProtos);
    if (files === undefined) {
      files = replace(entry.fileDescriptorProtos);
      cache.set(entry.fileDescriptorProtos, files);
    }
    replaced[name] = { ...entry, fileDescriptorProtos: files };
  }
  return replaced;
}

/** Renames protobufjs map entry types (`Statuses`) to what protoc emits (`StatusesEntry`). */
function repairMapEntryNames(bytes: Buffer): Buffer {
  const file = fromBinary(FileDescriptorProtoSchema, bytes);
  const repair = (message: DescriptorProto): void => {
    for (const field of message.field) {
      if (field.type !== FieldDescriptorProto_Type.MESSAGE) continue;
      const entry = message.nestedType.find((nested) => nested.options?.mapEntry === true && nested.name === field.typeName);
      if (entry === undefined) continue;
      entry.name = mapEntryName(field.name);
      field.typeName = entry.name;
    }
    message.nestedType.forEach(repair);
  };
  file.messageType.forEach(repair);
  return Buffer.from(toBinary(FileDescriptorProtoSchema, file));
}

/** protoc's map entry name: the field name in CamelCase plus `Entry` (`shard_counts` -> `ShardCountsEntry`). */
function mapEntryName(fieldName: string): string {
  const camel = fieldName.replace(/_([a-z0-9])/g, (_match, letter: string) => letter.toUpperCase());
  return `${camel.charAt(0).toUpperCase()}${camel.slice(1)}Entry`;
}

/** The health response as grpc-health-check's loader decodes it (enums as strings). */
interface HealthCheckReply {
  status: string;
}

/** grpc.health.v1.Health/Check, typed for `grpc.Client.makeUnaryRequest`. */
export const healthCheckMethod = {
  path: healthService.Check.path,
  serialize: (request: { service: string }): Buffer => healthService.Check.requestSerialize(request),
  deserialize: (bytes: Buffer): HealthCheckReply => {
    const reply: unknown = healthService.Check.responseDeserialize(bytes);
    const status = typeof reply === 'object' && reply !== null ? (reply as { status?: unknown }).status : undefined;
    return { status: typeof status === 'string' ? status : 'UNKNOWN' };
  },
} satisfies { path: string; serialize: grpc.serialize<{ service: string }>; deserialize: grpc.deserialize<HealthCheckReply> };
