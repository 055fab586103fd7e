/**
 * Conversions between the domain types and the wire (ts-proto) types, one module per service, shared
 * by the service that answers and the clients that call it; and the server side both replica services
 * share.
 */
export * from './orchestrator';
export * from './replica';
export * from './replica-server';
export * from './simulator';
