-- Work orders (contract section 12): a seeker holds at most one pending order per provider and
-- WORK_ORDER_MAX_PENDING in all, and a pending order expires after WORK_ORDER_TTL_SECS.

-- 'expired': the expiry worker's sweep ended a pending order nobody answered in time.
ALTER TABLE work_orders DROP CONSTRAINT IF EXISTS work_orders_status_check;
ALTER TABLE work_orders ADD CONSTRAINT work_orders_status_check
    CHECK (status IN ('pending', 'accepted', 'rejected', 'cancelled', 'completed', 'expired'));

-- The caps count a seeker's pending orders (and those to one provider) on every creation.
CREATE INDEX work_orders_pending_by_seeker ON work_orders (seeker_id, provider_id)
    WHERE status = 'pending';

-- The sweep finds the pending orders past their time, oldest first, without reading the others.
CREATE INDEX work_orders_pending_by_age ON work_orders (created_at)
    WHERE status = 'pending';

-- A provider who connects gets the 20 newest of their pending orders: read newest first.
DROP INDEX IF EXISTS work_orders_pending_by_provider;
CREATE INDEX work_orders_pending_by_provider ON work_orders (provider_id, created_at DESC, work_id DESC)
    WHERE status = 'pending';
