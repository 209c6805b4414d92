# frozen_string_literal: true

# Unchanged from an Action Cable app: pushgate's /cable calls it over the RPC
# (Pushgate::Cable::RPC, mounted in config/routes.rb) with the browser's
# Cookie header, so the session cookie signs the connection in as it always
# did. No JWT anywhere.
module ApplicationCable
  class Connection < ActionCable::Connection::Base
    identified_by :current_user

    def connect
      self.current_user = find_verified_user
    end

    def disconnect
      # runs once per ended connection, also when a gateway node drains
      current_user.update(last_seen_at: Time.current)
    end

    private

    def find_verified_user
      # the cookie your sign-in sets; with Devise: env["warden"].user (see docs/rails.md)
      User.find_by(id: cookies.encrypted[:user_id]) || reject_unauthorized_connection
    end
  end
end
