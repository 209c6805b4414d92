# frozen_string_literal: true

class Order < ApplicationRecord
  belongs_to :customer

  # after_save runs inside the transaction; the publish waits for the commit
  # and never happens if it rolls back, so clients never see a state the
  # database does not have.
  after_save :announce, if: :saved_change_to_state?

  private

  def announce
    Pushgate.publish_after_commit do
      Pushgate.batch do # one request to nsqd for both
        Pushgate.publish_to_user(customer, { event: "order.#{state}", order_id: id })
        Pushgate.broadcast("orders:dashboard", { id: id, state: state })
      end
    end
  end
end
